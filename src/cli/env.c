/*
 * env.c -- defaults the environment may set for the server-side commands:
 * PEMBA_DATASTORE (serve, datastore ...) and PEMBA_GRPC_ADDR (serve,
 * serve-testing).  A flag always wins; an empty variable counts as unset.
 * (The client commands' PEMBA_ENDPOINT and PEMBA_TOKEN are in client.c.)
 */
#include <stdlib.h>

#include "cli/cli.h"

static const char *env_or(const char *name, const char *fallback)
{
	const char *v = getenv(name);
	return v && *v ? v : fallback;
}

const char *cli_default_datastore(void)
{
	return env_or("PEMBA_DATASTORE", "sqlite://./pemba.db");
}

const char *cli_default_grpc_addr(void)
{
	return env_or("PEMBA_GRPC_ADDR", "127.0.0.1:50051");
}
