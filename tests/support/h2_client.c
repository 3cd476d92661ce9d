/*
 * h2_client.c -- see h2_client.h.  nghttp2 in client mode over a blocking
 * socket polled with poll(2).
 */
#include "h2_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

typedef struct h2_stream_state {
	int32_t id;
	h2_stream_info info;
	size_t frame_have; /* bytes of the current gRPC message seen */
	uint32_t frame_want;
	uint8_t prefix[5];
	size_t prefix_have;
	/* Pending request bytes. */
	uint8_t *out;
	size_t out_len, out_sent;
	bool end_after;
	bool deferred;
} h2_stream_state;

struct h2_conn {
	int fd;
	nghttp2_session *session;
	bool reading;
	bool broken;
	int goaway_code;
	char goaway_debug[64];
	h2_stream_state **streams;
	size_t nstreams, cap;
};

static h2_stream_state *find(h2_conn *c, int32_t id)
{
	for (size_t i = 0; i < c->nstreams; i++)
		if (c->streams[i]->id == id)
			return c->streams[i];
	return NULL;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user_data)
{
	h2_stream_state *st = find(user_data, frame->hd.stream_id);
	if (!st)
		return 0;
	char text[256];
	size_t n = valuelen < sizeof(text) - 1 ? valuelen : sizeof(text) - 1;
	memcpy(text, value, n);
	text[n] = 0;
	if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
		st->info.grpc_status = atoi(text);
	else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0)
		memcpy(st->info.message, text, n + 1);
	return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id,
                   const uint8_t *data, size_t len, void *user_data)
{
	h2_conn *c = user_data;
	h2_stream_state *st = find(c, id);
	if (c->reading) {
		nghttp2_session_consume(s, id, len);
	}
	if (!st)
		return 0;
	st->info.bytes += len;
	while (len > 0) {
		if (st->prefix_have < 5) {
			st->prefix[st->prefix_have++] = *data++;
			len--;
			if (st->prefix_have == 5) {
				st->frame_want = (uint32_t)st->prefix[1] << 24 |
				                 (uint32_t)st->prefix[2] << 16 |
				                 (uint32_t)st->prefix[3] << 8 |
				                 st->prefix[4];
				st->frame_have = 0;
			}
		} else {
			size_t take = st->frame_want - st->frame_have;
			if (take > len)
				take = len;
			st->frame_have += take;
			data += take;
			len -= take;
		}
		if (st->prefix_have == 5 && st->frame_have == st->frame_want) {
			st->info.messages++;
			st->prefix_have = 0;
		}
	}
	return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code,
                    void *user_data)
{
	h2_stream_state *st = find(user_data, id);
	if (st) {
		st->info.closed = true;
		st->info.rst_code = code;
	}
	return 0;
}

static int on_frame(nghttp2_session *s, const nghttp2_frame *frame,
                    void *user_data)
{
	h2_conn *c = user_data;
	if (frame->hd.type == NGHTTP2_GOAWAY) {
		c->goaway_code = (int)frame->goaway.error_code;
		size_t n = frame->goaway.opaque_data_len;
		if (n >= sizeof(c->goaway_debug))
			n = sizeof(c->goaway_debug) - 1;
		if (n > 0)
			memcpy(c->goaway_debug, frame->goaway.opaque_data, n);
		c->goaway_debug[n] = 0;
	}
	return 0;
}

static ssize_t body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                    uint32_t *flags, nghttp2_data_source *src, void *user_data)
{
	h2_stream_state *st = src->ptr;
	size_t n = st->out_len - st->out_sent;
	if (n == 0 && !st->end_after) {
		st->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	if (n > length)
		n = length;
	memcpy(buf, st->out + st->out_sent, n);
	st->out_sent += n;
	if (st->out_sent == st->out_len && st->end_after)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

h2_conn *h2_connect(int port, bool reading)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	struct sockaddr_in addr = {.sin_family = AF_INET,
	                           .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		close(fd);
		return NULL;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	h2_conn *c = calloc(1, sizeof(*c));
	c->fd = fd;
	c->reading = reading;
	c->goaway_code = -1;
	nghttp2_session_callbacks *cb;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
	nghttp2_option *opt;
	nghttp2_option_new(&opt);
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_session_client_new2(&c->session, cb, c, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	nghttp2_settings_entry settings[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
	};
	nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 1);
	if (reading)
		nghttp2_session_set_local_window_size(
		    c->session, NGHTTP2_FLAG_NONE, 0, 16 << 20);
	return c;
}

static void frame_message(h2_stream_state *st, const void *msg, size_t len,
                          uint8_t flag)
{
	st->out = realloc(st->out, st->out_len + len + 5);
	uint8_t *p = st->out + st->out_len;
	p[0] = flag;
	p[1] = (uint8_t)(len >> 24);
	p[2] = (uint8_t)(len >> 16);
	p[3] = (uint8_t)(len >> 8);
	p[4] = (uint8_t)len;
	memcpy(p + 5, msg, len);
	st->out_len += len + 5;
}

#define NV(a, b)                                                               \
	{                                                                      \
		(uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b),          \
		    NGHTTP2_NV_FLAG_NONE                                       \
	}

int32_t h2_start(h2_conn *c, const char *path, const char *auth,
                 const char *extra_name, const char *extra_value,
                 const void *msg, size_t len, uint8_t flag, bool end_stream)
{
	h2_stream_state *st = calloc(1, sizeof(*st));
	st->info.grpc_status = -1;
	st->end_after = end_stream;
	if (msg)
		frame_message(st, msg, len, flag);
	nghttp2_nv nv[8] = {
	    NV(":method", "POST"),
	    NV(":scheme", "http"),
	    NV(":path", path),
	    NV(":authority", "localhost"),
	    NV("content-type", "application/grpc"),
	    NV("te", "trailers"),
	};
	size_t n = 6;
	if (auth)
		nv[n++] = (nghttp2_nv)NV("authorization", auth);
	if (extra_name)
		nv[n++] = (nghttp2_nv)NV(extra_name, extra_value);
	nghttp2_data_provider provider = {.source.ptr = st,
	                                  .read_callback = body};
	int32_t id =
	    nghttp2_submit_request(c->session, NULL, nv, n, &provider, NULL);
	if (id <= 0) {
		free(st->out);
		free(st);
		return -1;
	}
	st->id = id;
	if (c->nstreams == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 16;
		c->streams = realloc(c->streams, c->cap * sizeof(*c->streams));
	}
	c->streams[c->nstreams++] = st;
	return id;
}

int h2_send(h2_conn *c, int32_t id, const void *msg, size_t len,
            bool end_stream)
{
	h2_stream_state *st = find(c, id);
	if (!st)
		return -1;
	if (msg)
		frame_message(st, msg, len, 0);
	if (end_stream)
		st->end_after = true;
	if (st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(c->session, id);
	}
	return 0;
}

int h2_pump(h2_conn *c, int timeout_ms)
{
	if (c->broken)
		return -1;
	for (;;) {
		const uint8_t *out;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(c->session, &out)) > 0) {
			size_t off = 0;
			while (off < (size_t)n) {
				ssize_t w = send(c->fd, out + off,
				                 (size_t)n - off, MSG_NOSIGNAL);
				if (w <= 0) {
					c->broken = true;
					return -1;
				}
				off += (size_t)w;
			}
		}
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int r = poll(&p, 1, timeout_ms);
		if (r <= 0)
			return 0;
		uint8_t buf[65536];
		ssize_t got = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (got <= 0) {
			c->broken = true;
			return -1;
		}
		if (nghttp2_session_mem_recv(c->session, buf, (size_t)got) <
		    0) {
			c->broken = true;
			return -1;
		}
		timeout_ms = 0; /* drain what is there, then return */
	}
}

void h2_ping(h2_conn *c)
{
	nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL);
}

int h2_goaway(h2_conn *c, char *debug, size_t cap)
{
	if (debug && cap) {
		snprintf(debug, cap, "%s", c->goaway_debug);
	}
	return c->goaway_code;
}

const h2_stream_info *h2_stream(h2_conn *c, int32_t id)
{
	h2_stream_state *st = find(c, id);
	return st ? &st->info : NULL;
}

bool h2_closed(h2_conn *c)
{
	return c->broken;
}

void h2_close(h2_conn *c)
{
	if (!c)
		return;
	nghttp2_session_del(c->session);
	close(c->fd);
	for (size_t i = 0; i < c->nstreams; i++) {
		free(c->streams[i]->out);
		free(c->streams[i]);
	}
	free(c->streams);
	free(c);
}
