/*
 * grpc_internal.h -- pieces shared by the gRPC server and client: byte
 * buffers, socket + TLS I/O, address parsing, base64.  Not for other layers.
 */
#ifndef PEMBA_API_GRPC_INTERNAL_H
#define PEMBA_API_GRPC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "api/grpc.h"

/* gRPC message prefix: 1 flag byte + 4-byte big-endian length. */
#define GRPC_PREFIX_LEN 5

/* ===================================================================== */
/* Byte queue: append at the tail, consume from the head                 */
/* ===================================================================== */

typedef struct grpc_buf {
	uint8_t *data;
	size_t head; /* first unconsumed byte */
	size_t len;  /* end of valid bytes */
	size_t cap;
} grpc_buf;

static inline size_t grpc_buf_size(const grpc_buf *b)
{
	return b->len - b->head;
}
void grpc_buf_append(grpc_buf *b, const void *p, size_t n);
/* Appends the 5-byte prefix and the message. */
void grpc_buf_append_message(grpc_buf *b, const void *p, size_t n);
void grpc_buf_consume(grpc_buf *b, size_t n);
void grpc_buf_free(grpc_buf *b);

/* ===================================================================== */
/* Incremental message deframer                                          */
/* ===================================================================== */

typedef struct grpc_deframer {
	uint8_t prefix[GRPC_PREFIX_LEN];
	size_t prefix_have;
	uint32_t want; /* body length of the current message */
	uint8_t *body; /* NULL until the prefix is complete */
	size_t body_have;
} grpc_deframer;

/* Result of grpc_deframe. */
enum {
	GRPC_DEFRAME_MORE = 0,        /* consumed everything, need more */
	GRPC_DEFRAME_MESSAGE = 1,     /* *msg / *msg_len hold a message */
	GRPC_DEFRAME_TOOBIG = -1,     /* declared length above the limit */
	GRPC_DEFRAME_COMPRESSED = -2, /* compressed flag set */
	GRPC_DEFRAME_BADFLAG = -3     /* flag byte neither 0 nor 1 */
};

/* Feeds up to *len bytes from *p; advances *p / *len past what it used.
 * On GRPC_DEFRAME_MESSAGE, *msg (malloc'd, NUL-terminated, caller frees)
 * and *msg_len are set; *declared receives the declared length on
 * TOOBIG, the flag byte on BADFLAG.  Call again while *len > 0. */
int grpc_deframe(grpc_deframer *d, const uint8_t **p, size_t *len,
                 size_t max_len, uint8_t **msg, size_t *msg_len,
                 uint32_t *declared);
/* True when in the middle of a message. */
int grpc_deframer_partial(const grpc_deframer *d);
void grpc_deframer_free(grpc_deframer *d);

/* ===================================================================== */
/* Socket / TLS I/O                                                      */
/* ===================================================================== */

enum { GRPC_IO_AGAIN = -2, GRPC_IO_ERROR = -1 };

typedef struct grpc_io {
	int fd;
	SSL *ssl;            /* NULL for cleartext */
	int ssl_wants_write; /* last SSL call returned WANT_WRITE */
} grpc_io;

/* Non-blocking read/write: > 0 bytes, 0 end of stream (read only),
 * GRPC_IO_AGAIN, GRPC_IO_ERROR. */
ssize_t grpc_io_read(grpc_io *io, void *p, size_t n);
ssize_t grpc_io_write(grpc_io *io, const void *p, size_t n);

/* Connects ssl to the socket fd through a BIO that never raises SIGPIPE.
 * 0 or -1. */
int grpc_io_attach_ssl(SSL *ssl, int fd);

/* Splits "host:port" / "[v6]:port" / ":port".  host_out gets a malloc'd
 * string (empty for ":port").  0 or -1. */
int grpc_split_host_port(const char *addr, char **host_out, int *port_out);

/* Unpadded standard base64 (as gRPC emits for -bin metadata).  Malloc'd. */
char *grpc_base64_encode(const void *p, size_t n);
/* Decodes base64 text[0..len), standard or URL alphabet, padded or not (gRPC
 * accepts both for -bin metadata).  Malloc'd bytes and *out_len, or NULL
 * when malformed. */
uint8_t *grpc_base64_decode(const char *text, size_t len, size_t *out_len);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t grpc_now_ns(void);

/* Maps an HTTP status without grpc-status to a gRPC code (gRPC spec). */
int grpc_status_from_http(int http_status);

#endif
