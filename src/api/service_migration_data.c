/*
 * service_migration_data.c -- pemba.v1.MigrationService: CopyRelationships and VerifyPermission.
 */
#include "api/services.h"

size_t svc_migration_data_methods(svc_backend *b, grpc_method *out)
{
	(void)b;
	(void)out;
	return 0; /* no methods registered yet */
}
