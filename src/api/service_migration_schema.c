/*
 * service_migration_schema.c -- pemba.v1.MigrationService: DryRunWriteSchema and PlanSchema.
 */
#include "api/services.h"

size_t svc_migration_schema_methods(svc_backend *b, grpc_method *out)
{
	(void)b;
	(void)out;
	return 0; /* no methods registered yet */
}
