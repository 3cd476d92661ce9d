/*
 * service_watch.c -- authzed.api.v1.WatchService.Watch: a server stream of
 * the changes committed after optional_start_cursor (or after the head at
 * the time of the call), in revision order.
 *
 * Loop: read up to WATCH_REVISIONS revisions of changes with
 * pemba_watch_changes (one snapshot), queue the packed responses, send
 * them (outside the snapshot, so a slow client never holds a read
 * transaction), then wait for the next commit with pemba_wait_revision.
 * Every response's changes_through names the revision it completes; the
 * client can restart from any of them.  The call holds its own handle
 * (SVC_ACQUIRE_LONG) for its whole life and ends when the client cancels,
 * the deadline passes or the server shuts down.
 */
#include <stdlib.h>
#include <string.h>

#include "api/services.h"
#include "api/zedtoken.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "util/error.h"
#include "util/xalloc.h"

#define WATCH_REVISIONS 64
#define WATCH_POLL_MS 500

typedef struct packed {
	uint8_t *data;
	size_t len;
} packed;

typedef struct watch_queue {
	pemba_db *db;
	packed *items;
	size_t n, cap;
} watch_queue;

static int queue_event(void *ctx, const pemba_watch_event *ev)
{
	watch_queue *q = ctx;
	Authzed__Api__V1__WatchResponse resp =
	    AUTHZED__API__V1__WATCH_RESPONSE__INIT;
	svc_zedtoken zt;
	Authzed__Api__V1__RelationshipUpdate *ups =
	    xcalloc(ev->nupdates + 1, sizeof(*ups));
	Authzed__Api__V1__RelationshipUpdate **upp =
	    xcalloc(ev->nupdates + 1, sizeof(*upp));
	for (size_t i = 0; i < ev->nupdates; i++) {
		authzed__api__v1__relationship_update__init(&ups[i]);
		ups[i].operation =
		    ev->updates[i].op == PEMBA_OP_DELETE
		        ? AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE
		        : AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
		ups[i].relationship =
		    svc_relationship_to_proto(&ev->updates[i].rel);
		upp[i] = &ups[i];
	}
	resp.updates = upp;
	resp.n_updates = ev->nupdates;
	resp.changes_through = svc_zedtoken_make(&zt, q->db, ev->revision);
	resp.schema_updated = ev->schema_updated != 0;
	resp.is_checkpoint = ev->is_checkpoint != 0;
	if (q->n == q->cap) {
		q->cap = q->cap ? 2 * q->cap : 16;
		q->items = xrealloc(q->items, q->cap * sizeof(*q->items));
	}
	packed *p = &q->items[q->n++];
	p->len = protobuf_c_message_get_packed_size(&resp.base);
	p->data = xmalloc(p->len + 1);
	protobuf_c_message_pack(&resp.base, p->data);
	for (size_t i = 0; i < ev->nupdates; i++)
		svc_relationship_free(ups[i].relationship);
	free(ups);
	free(upp);
	return 0;
}

static void queue_clear(watch_queue *q)
{
	for (size_t i = 0; i < q->n; i++)
		free(q->items[i].data);
	q->n = 0;
}

static int kinds_from_proto(const Authzed__Api__V1__WatchRequest *m,
                            unsigned *kinds, pemba_error *err)
{
	*kinds = 0;
	for (size_t i = 0; i < m->n_optional_update_kinds; i++) {
		switch (m->optional_update_kinds[i]) {
		case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_RELATIONSHIP_UPDATES:
			*kinds |= PEMBA_WATCH_RELATIONSHIPS;
			break;
		case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_SCHEMA_UPDATES:
			*kinds |= PEMBA_WATCH_SCHEMA;
			break;
		case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_CHECKPOINTS:
			*kinds |= PEMBA_WATCH_CHECKPOINTS;
			break;
		case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_UNSPECIFIED:
			*kinds |= PEMBA_WATCH_RELATIONSHIPS;
			break;
		default:
			return error_set(
			    err, PEMBA_EINVAL,
			    "invalid argument: unknown watch kind %d",
			    (int)m->optional_update_kinds[i]);
		}
	}
	if (*kinds == 0)
		*kinds = PEMBA_WATCH_RELATIONSHIPS;
	return 0;
}

static void handle_watch(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx, &authzed__api__v1__watch_request__descriptor,
	              SVC_ACQUIRE_LONG, &req) != 0)
		return;
	const Authzed__Api__V1__WatchRequest *m = (const void *)req.message;
	pemba_error err = {0};
	pemba_watch_filter wf = {0};
	pemba_filter *filters = NULL;
	watch_queue q = {.db = req.db};
	pemba_revision after = 0;
	int rc = kinds_from_proto(m, &wf.kinds, &err);
	if (rc == 0 && m->n_optional_object_types &&
	    m->n_optional_relationship_filters)
		rc = error_set(&err, PEMBA_EINVAL,
		               "invalid argument: cannot specify both object "
		               "types and relationship filters");
	wf.object_types = (const char *const *)m->optional_object_types;
	wf.nobject_types = m->n_optional_object_types;
	filters =
	    xcalloc(m->n_optional_relationship_filters + 1, sizeof(*filters));
	for (size_t i = 0; rc == 0 && i < m->n_optional_relationship_filters;
	     i++) {
		const char *prefix;
		rc = svc_filter_from_proto(m->optional_relationship_filters[i],
		                           true, &filters[i], &prefix, &err);
		if (rc == 0 && prefix[0])
			rc = error_set(&err, PEMBA_EUNSUPPORTED,
			               "watch filters with "
			               "optional_resource_id_prefix are not "
			               "supported yet");
	}
	wf.filters = filters;
	wf.nfilters = m->n_optional_relationship_filters;
	if (rc == 0) {
		if (m->optional_start_cursor)
			rc = zedtoken_decode_db(
			    req.db, m->optional_start_cursor->token,
			    strlen(m->optional_start_cursor->token ?: ""),
			    &after, &err);
		else
			rc = pemba_head_revision(req.db, &after, &err);
	}
	if (rc < 0) {
		svc_finish_error(call, &err);
		goto out;
	}
	while (!grpc_call_cancelled(call)) {
		pemba_revision last = after, head = 0;
		queue_clear(&q);
		rc = pemba_watch_changes(req.db, after, &wf, WATCH_REVISIONS,
		                         queue_event, &q, &last, &err);
		if (rc < 0) {
			svc_finish_error(call, &err);
			goto out;
		}
		for (size_t i = 0; i < q.n; i++)
			if (grpc_call_send(call, q.items[i].data,
			                   q.items[i].len) < 0)
				goto out;
		if (last > after) {
			after = last;
			continue; /* there may be more right away */
		}
		rc = pemba_wait_revision(req.db, after, WATCH_POLL_MS, &head,
		                         &err);
		if (rc < 0) {
			svc_finish_error(call, &err);
			goto out;
		}
	}
	/* Cancelled: the transport has ended the call already. */
	grpc_call_finish(call, GRPC_STATUS_CANCELLED, "watch ended");
out:
	queue_clear(&q);
	free(q.items);
	free(filters);
	svc_end(&req);
}

size_t svc_watch_methods(svc_backend *b, grpc_method *out)
{
	out[0] = (grpc_method){"/authzed.api.v1.WatchService/Watch",
	                       GRPC_METHOD_SERVER_STREAMING, handle_watch, b};
	return 1;
}
