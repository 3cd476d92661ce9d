/*
 * service_migration_admin.c -- pemba.v1.MigrationService: SetReadOnly, GetMigrationStatus, DeprecateRelation and UndeprecateRelation.
 */
#include "api/services.h"

size_t svc_migration_admin_methods(svc_backend *b, grpc_method *out)
{
	(void)b;
	(void)out;
	return 0; /* no methods registered yet */
}
