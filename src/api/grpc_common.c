/*
 * grpc_common.c -- helpers shared by the gRPC server and client: status
 * names, grpc-message percent-encoding, grpc-timeout parsing, constant-time
 * comparison, byte queues, message deframing, socket/TLS I/O, base64.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>

#include <openssl/err.h>

#include "api/grpc_internal.h"
#include "util/xalloc.h"

/* ===================================================================== */
/* Status codes                                                          */
/* ===================================================================== */

static const char *const status_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *grpc_status_name(int code)
{
	if (code < 0 || code > GRPC_STATUS_UNAUTHENTICATED)
		return "UNKNOWN";
	return status_names[code];
}

void grpc_status_clear(grpc_status *status)
{
	if (status == NULL)
		return;
	free(status->message);
	status->message = NULL;
	free(status->details);
	status->details = NULL;
	status->details_len = 0;
}

/* The mapping of the gRPC HTTP/2 protocol document for responses that
 * carry no grpc-status (proxies, non-gRPC servers). */
int grpc_status_from_http(int http_status)
{
	switch (http_status) {
	case 400:
		return GRPC_STATUS_INTERNAL;
	case 401:
		return GRPC_STATUS_UNAUTHENTICATED;
	case 403:
		return GRPC_STATUS_PERMISSION_DENIED;
	case 404:
		return GRPC_STATUS_UNIMPLEMENTED;
	case 429:
	case 502:
	case 503:
	case 504:
		return GRPC_STATUS_UNAVAILABLE;
	default:
		return GRPC_STATUS_UNKNOWN;
	}
}

/* ===================================================================== */
/* Small text helpers                                                    */
/* ===================================================================== */

bool grpc_const_time_equal(const void *a, size_t a_len, const void *b,
                           size_t b_len)
{
	const volatile uint8_t *x = a, *y = b;
	/* Walk the longer length so the time does not reveal a prefix match;
	 * out-of-range positions compare against zero. */
	size_t n = a_len > b_len ? a_len : b_len;
	uint8_t diff = a_len != b_len;
	for (size_t i = 0; i < n; i++) {
		uint8_t cx = i < a_len ? x[i] : 0;
		uint8_t cy = i < b_len ? y[i] : 0;
		diff |= cx ^ cy;
	}
	return diff == 0;
}

char *grpc_percent_encode(const char *text)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(text);
	char *out = xmalloc(3 * n + 1), *o = out;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c >= 0x20 && c <= 0x7e && c != '%') {
			*o++ = (char)c;
		} else {
			*o++ = '%';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
	}
	*o = 0;
	return out;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Malformed escapes are kept literally, as the protocol asks receivers to
 * do rather than fail the call. */
char *grpc_percent_decode(const char *text)
{
	size_t n = strlen(text);
	char *out = xmalloc(n + 1), *o = out;
	for (size_t i = 0; i < n; i++) {
		if (text[i] == '%' && i + 2 < n &&
		    hex_value(text[i + 1]) >= 0 &&
		    hex_value(text[i + 2]) >= 0) {
			*o++ = (char)(hex_value(text[i + 1]) * 16 +
			              hex_value(text[i + 2]));
			i += 2;
		} else {
			*o++ = text[i];
		}
	}
	*o = 0;
	return out;
}

int grpc_parse_timeout(const char *text, int64_t *ns)
{
	size_t n = strlen(text);
	if (n < 2 || n > 9)
		return -1;
	int64_t value = 0;
	for (size_t i = 0; i + 1 < n; i++) {
		if (text[i] < '0' || text[i] > '9')
			return -1;
		value = value * 10 + (text[i] - '0');
	}
	int64_t unit;
	switch (text[n - 1]) {
	case 'H':
		unit = 3600LL * 1000000000LL;
		break;
	case 'M':
		unit = 60LL * 1000000000LL;
		break;
	case 'S':
		unit = 1000000000LL;
		break;
	case 'm':
		unit = 1000000LL;
		break;
	case 'u':
		unit = 1000LL;
		break;
	case 'n':
		unit = 1;
		break;
	default:
		return -1;
	}
	/* 8 digits of hours overflow int64 nanoseconds: clamp to ~100 years,
	 * which is "no deadline" in practice. */
	const int64_t cap = 100LL * 365 * 24 * 3600 * 1000000000LL;
	if (value > cap / unit)
		*ns = cap;
	else
		*ns = value * unit;
	return 0;
}

int64_t grpc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

char *grpc_base64_encode(const void *p, size_t n)
{
	static const char alphabet[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const uint8_t *s = p;
	char *out = xmalloc(4 * ((n + 2) / 3) + 1), *o = out;
	size_t i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v =
		    (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		*o++ = alphabet[v >> 18];
		*o++ = alphabet[(v >> 12) & 63];
		*o++ = alphabet[(v >> 6) & 63];
		*o++ = alphabet[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)s[i] << 16;
		*o++ = alphabet[v >> 18];
		*o++ = alphabet[(v >> 12) & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
		*o++ = alphabet[v >> 18];
		*o++ = alphabet[(v >> 12) & 63];
		*o++ = alphabet[(v >> 6) & 63];
	}
	*o = 0;
	return out;
}

static int base64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

uint8_t *grpc_base64_decode(const char *text, size_t len, size_t *out_len)
{
	while (len > 0 && text[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return NULL;
	uint8_t *out = xmalloc(len / 4 * 3 + 3), *o = out;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = base64_value((unsigned char)text[i]);
		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			*o++ = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	*out_len = (size_t)(o - out);
	return out;
}

int grpc_split_host_port(const char *addr, char **host_out, int *port_out)
{
	const char *colon;
	const char *host_start = addr;
	size_t host_len;
	if (addr == NULL)
		return -1;
	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');
		if (close == NULL || close[1] != ':')
			return -1;
		host_start = addr + 1;
		host_len = (size_t)(close - host_start);
		colon = close + 1;
	} else {
		colon = strrchr(addr, ':');
		if (colon == NULL)
			return -1;
		host_len = (size_t)(colon - addr);
	}
	char *end;
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	if (colon[1] == 0 || *end != 0 || errno || port < 0 || port > 65535)
		return -1;
	*host_out = xstrndup(host_start, host_len);
	*port_out = (int)port;
	return 0;
}

/* ===================================================================== */
/* Byte queue                                                            */
/* ===================================================================== */

static void buf_reserve(grpc_buf *b, size_t n)
{
	if (b->len + n <= b->cap)
		return;
	/* Slide the unconsumed bytes to the front before growing. */
	if (b->head > 0) {
		memmove(b->data, b->data + b->head, b->len - b->head);
		b->len -= b->head;
		b->head = 0;
		if (b->len + n <= b->cap)
			return;
	}
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + n)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void grpc_buf_append(grpc_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void grpc_buf_append_message(grpc_buf *b, const void *p, size_t n)
{
	uint8_t prefix[GRPC_PREFIX_LEN] = {0, (uint8_t)(n >> 24),
	                                   (uint8_t)(n >> 16),
	                                   (uint8_t)(n >> 8), (uint8_t)n};
	buf_reserve(b, GRPC_PREFIX_LEN + n);
	grpc_buf_append(b, prefix, GRPC_PREFIX_LEN);
	grpc_buf_append(b, p, n);
}

void grpc_buf_consume(grpc_buf *b, size_t n)
{
	b->head += n;
	if (b->head >= b->len)
		b->head = b->len = 0;
}

void grpc_buf_free(grpc_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* ===================================================================== */
/* Deframer                                                              */
/* ===================================================================== */

int grpc_deframe(grpc_deframer *d, const uint8_t **p, size_t *len,
                 size_t max_len, uint8_t **msg, size_t *msg_len,
                 uint32_t *declared)
{
	while (*len > 0) {
		if (d->body == NULL) {
			size_t take = GRPC_PREFIX_LEN - d->prefix_have;
			if (take > *len)
				take = *len;
			memcpy(d->prefix + d->prefix_have, *p, take);
			d->prefix_have += take;
			*p += take;
			*len -= take;
			if (d->prefix_have < GRPC_PREFIX_LEN)
				return GRPC_DEFRAME_MORE;
			uint32_t n = (uint32_t)d->prefix[1] << 24 |
			             (uint32_t)d->prefix[2] << 16 |
			             (uint32_t)d->prefix[3] << 8 | d->prefix[4];
			if (d->prefix[0] > 1) {
				*declared = d->prefix[0];
				return GRPC_DEFRAME_BADFLAG;
			}
			if (d->prefix[0] == 1)
				return GRPC_DEFRAME_COMPRESSED;
			if (n > max_len) {
				*declared = n;
				return GRPC_DEFRAME_TOOBIG;
			}
			d->want = n;
			d->body = xmalloc((size_t)n + 1);
			d->body_have = 0;
		}
		size_t take = d->want - d->body_have;
		if (take > *len)
			take = *len;
		memcpy(d->body + d->body_have, *p, take);
		d->body_have += take;
		*p += take;
		*len -= take;
		if (d->body_have == d->want)
			break;
	}
	if (d->body != NULL && d->body_have == d->want) {
		d->body[d->want] = 0;
		*msg = d->body;
		*msg_len = d->want;
		d->body = NULL;
		d->prefix_have = 0;
		return GRPC_DEFRAME_MESSAGE;
	}
	return GRPC_DEFRAME_MORE;
}

int grpc_deframer_partial(const grpc_deframer *d)
{
	return d->prefix_have > 0 || d->body != NULL;
}

void grpc_deframer_free(grpc_deframer *d)
{
	free(d->body);
	memset(d, 0, sizeof(*d));
}

/* ===================================================================== */
/* Socket / TLS I/O                                                      */
/* ===================================================================== */

static ssize_t ssl_result(grpc_io *io, int rv)
{
	if (rv > 0)
		return rv;
	int e = SSL_get_error(io->ssl, rv);
	switch (e) {
	case SSL_ERROR_WANT_READ:
		return GRPC_IO_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		io->ssl_wants_write = 1;
		return GRPC_IO_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		return GRPC_IO_ERROR;
	}
}

ssize_t grpc_io_read(grpc_io *io, void *p, size_t n)
{
	if (io->ssl != NULL) {
		ERR_clear_error();
		io->ssl_wants_write = 0;
		return ssl_result(io, SSL_read(io->ssl, p, (int)n));
	}
	for (;;) {
		ssize_t r = read(io->fd, p, n);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return GRPC_IO_AGAIN;
		return GRPC_IO_ERROR;
	}
}

ssize_t grpc_io_write(grpc_io *io, const void *p, size_t n)
{
	if (io->ssl != NULL) {
		ERR_clear_error();
		io->ssl_wants_write = 0;
		ssize_t r = ssl_result(io, SSL_write(io->ssl, p, (int)n));
		return r == 0 ? GRPC_IO_ERROR : r;
	}
	for (;;) {
		ssize_t r = send(io->fd, p, n, MSG_NOSIGNAL);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return GRPC_IO_AGAIN;
		return GRPC_IO_ERROR;
	}
}

/* A socket BIO whose writes use send(MSG_NOSIGNAL): OpenSSL's own socket
 * BIO uses write(), which raises SIGPIPE on a connection the peer closed,
 * and library code must not kill its host process nor change its signal
 * dispositions. */
static BIO_METHOD *nosigpipe_method;
static pthread_once_t nosigpipe_once = PTHREAD_ONCE_INIT;

static int nosigpipe_write(BIO *bio, const char *data, int len)
{
	int fd = -1;
	BIO_get_fd(bio, &fd);
	BIO_clear_retry_flags(bio);
	ssize_t n;
	do {
		n = send(fd, data, (size_t)len, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_write(bio);
	return (int)n;
}

static void nosigpipe_init(void)
{
	const BIO_METHOD *base = BIO_s_socket();
	BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOCKET, "pemba socket");
	BIO_meth_set_write(m, nosigpipe_write);
	BIO_meth_set_read(m, BIO_meth_get_read(base));
	BIO_meth_set_puts(m, BIO_meth_get_puts(base));
	BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(base));
	BIO_meth_set_create(m, BIO_meth_get_create(base));
	BIO_meth_set_destroy(m, BIO_meth_get_destroy(base));
	nosigpipe_method = m;
}

int grpc_io_attach_ssl(SSL *ssl, int fd)
{
	pthread_once(&nosigpipe_once, nosigpipe_init);
	BIO *bio = BIO_new(nosigpipe_method);
	if (bio == NULL)
		return -1;
	BIO_set_fd(bio, fd, BIO_NOCLOSE);
	SSL_set_bio(ssl, bio, bio);
	return 0;
}
