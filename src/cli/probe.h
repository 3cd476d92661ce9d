/*
 * probe.h -- what a server speaks, asked after a failed connection so the
 * error can name the fix (probe.c).  Each opens its own connection to
 * "host:port" with 2 s timeouts; false also when it cannot connect.
 */
#ifndef PEMBA_CLI_PROBE_H
#define PEMBA_CLI_PROBE_H

#include <stdbool.h>

/* True when the server answers the HTTP/2 client preface in plaintext. */
bool cli_probe_speaks_h2c(const char *endpoint);

/* True when a TLS handshake (certificate not verified) completes. */
bool cli_probe_speaks_tls(const char *endpoint);

#endif
