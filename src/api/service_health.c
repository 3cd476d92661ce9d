/*
 * service_health.c -- grpc.health.v1.Health/Check: SERVING for the whole
 * server ("") and for every service pemba implements while the datastore
 * answers (svc_backend.datastore_health), NOT_SERVING while it does not;
 * NOT_FOUND for other service names, as the gRPC health protocol asks.
 */
#include <string.h>

#include "api/services.h"
#include "grpc/health/v1/health.pb-c.h"

static const char *const known_services[] = {
    "",
    "authzed.api.v1.SchemaService",
    "authzed.api.v1.PermissionsService",
    "authzed.api.v1.ExperimentalService",
    "authzed.api.v1.WatchService",
    "grpc.health.v1.Health",
};

/* Check needs no datastore handle: the backend knows the datastore's
 * health from its own probes. */
static void handle_check(grpc_call *call, void *ctx)
{
	svc_backend *b = ctx;
	const uint8_t *data;
	size_t len;
	if (grpc_call_read(call, &data, &len) < 0)
		return;
	Grpc__Health__V1__HealthCheckRequest *m;
	pemba_error err = {0};
	if (svc_unpack(&grpc__health__v1__health_check_request__descriptor,
	               data, len, (ProtobufCMessage **)&m, &err) != 0) {
		svc_finish_error(call, &err);
		return;
	}
	const char *service = m->service ? m->service : "";
	int known = 0;
	for (size_t i = 0;
	     i < sizeof(known_services) / sizeof(known_services[0]); i++)
		if (strcmp(service, known_services[i]) == 0)
			known = 1;
	grpc__health__v1__health_check_request__free_unpacked(m, NULL);
	if (!known) {
		grpc_call_finish(call, GRPC_STATUS_NOT_FOUND,
		                 "unknown service");
		return;
	}
	Grpc__Health__V1__HealthCheckResponse resp =
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	const char *reason = NULL;
	resp.status =
	    b->datastore_health && b->datastore_health(b->ctx, &reason) != 0
	        ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
	        : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	svc_reply(call, &resp.base);
}

size_t svc_health_methods(svc_backend *b, grpc_method *out)
{
	out[0] = (grpc_method){"/grpc.health.v1.Health/Check",
	                       GRPC_METHOD_UNARY, handle_check, b};
	return 1;
}
