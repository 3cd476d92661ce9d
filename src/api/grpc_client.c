/*
 * grpc_client.c -- a small blocking gRPC client over one HTTP/2 connection
 * (nghttp2, optional TLS).  Each API call drives the connection from the
 * calling thread with poll() until its streams are done; a mutex makes
 * calls from several threads take turns.  Used by the CLI and the tests.
 * At the end, the multiplexing client (grpc_mux): the same connection and
 * calls, driven by a thread of its own for callers that must not wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "api/grpc_internal.h"
#include "util/error.h"
#include "util/xalloc.h"

#define DEFAULT_CONNECT_MS 10000
#define DEFAULT_MAX_MESSAGE (64u * 1024 * 1024)
/* How long after its deadline the client gives up on a call locally; the
 * server normally answers DEADLINE_EXCEEDED first. */
#define LOCAL_DEADLINE_GRACE_NS (500LL * 1000000)

/* ===================================================================== */
/* Types                                                                 */
/* ===================================================================== */

typedef struct client_call {
	struct grpc_client *client;
	int32_t stream_id;
	/* request side */
	grpc_buf out;
	grpc_next_message_fn next;
	void *next_ctx;
	bool out_eof;
	/* response side */
	grpc_deframer deframer;
	grpc_message_fn on_message;
	void *message_ctx;
	uint8_t *last;
	size_t last_len;
	size_t message_count;
	int http_status;
	int grpc_status; /* -1 until received */
	char *grpc_message;
	uint8_t *grpc_details; /* grpc-status-details-bin, decoded */
	size_t grpc_details_len;
	int local_status; /* -1, or a status decided on this side */
	char *local_message;
	int64_t deadline; /* local give-up time, 0 for none */
	bool done;
	bool refused; /* reset with REFUSED_STREAM: never processed */
} client_call;

struct grpc_client {
	grpc_client_options options;
	char *host;
	char *authority;
	grpc_io io;
	SSL_CTX *ssl_ctx;
	nghttp2_session *session;
	grpc_buf outbuf;
	pthread_mutex_t lock;
	char *broken; /* why the connection is unusable, or NULL */
	bool goaway;  /* the server sent GOAWAY: no new streams here */
};

/* ===================================================================== */
/* Call state                                                            */
/* ===================================================================== */

static void call_set_local(client_call *call, int status, const char *msg)
{
	if (call->local_status >= 0 || call->done)
		return;
	call->local_status = status;
	call->local_message = msg ? xstrdup(msg) : NULL;
}

/* Cancels the stream and records status as the outcome. */
static void call_abort(client_call *call, int status, const char *msg)
{
	call_set_local(call, status, msg);
	if (call->stream_id > 0 && !call->done)
		nghttp2_submit_rst_stream(call->client->session,
		                          NGHTTP2_FLAG_NONE, call->stream_id,
		                          NGHTTP2_CANCEL);
}

static void call_init(client_call *call, grpc_client *c)
{
	memset(call, 0, sizeof(*call));
	call->client = c;
	call->grpc_status = -1;
	call->local_status = -1;
}

static void call_cleanup(client_call *call)
{
	grpc_buf_free(&call->out);
	grpc_deframer_free(&call->deframer);
	free(call->last);
	free(call->grpc_message);
	free(call->grpc_details);
	free(call->local_message);
}

/* The final status of a finished call: local decisions (deadline, cancel)
 * win, then the server's grpc-status, then what HTTP tells. */
static int call_status(client_call *call, grpc_status *status)
{
	status->message = NULL;
	status->details = NULL;
	status->details_len = 0;
	status->local = call->local_status >= 0;
	if (call->local_status >= 0) {
		status->code = call->local_status;
		if (call->local_message)
			status->message = xstrdup(call->local_message);
	} else if (call->grpc_status >= 0) {
		status->code = call->grpc_status;
		if (call->grpc_message)
			status->message = xstrdup(call->grpc_message);
		if (call->grpc_details) {
			status->details = xmalloc(call->grpc_details_len + 1);
			memcpy(status->details, call->grpc_details,
			       call->grpc_details_len);
			status->details_len = call->grpc_details_len;
		}
	} else if (call->http_status != 0 && call->http_status != 200) {
		status->code = grpc_status_from_http(call->http_status);
		char text[64];
		snprintf(text, sizeof(text),
		         "HTTP status %d without grpc-status",
		         call->http_status);
		status->message = xstrdup(text);
	} else {
		status->code = GRPC_STATUS_INTERNAL;
		status->message =
		    xstrdup("stream closed without a grpc-status");
	}
	return status->code;
}

/* ===================================================================== */
/* nghttp2 callbacks                                                     */
/* ===================================================================== */

static int on_header(nghttp2_session *session, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user_data)
{
	client_call *call =
	    nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (call == NULL || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	char text[24];
	if (namelen == 7 && memcmp(name, ":status", 7) == 0 && valuelen < 8) {
		memcpy(text, value, valuelen);
		text[valuelen] = 0;
		call->http_status = atoi(text);
	} else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0 &&
	           valuelen < 8) {
		memcpy(text, value, valuelen);
		text[valuelen] = 0;
		call->grpc_status = atoi(text);
	} else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
		char *raw = xstrndup((const char *)value, valuelen);
		free(call->grpc_message);
		call->grpc_message = grpc_percent_decode(raw);
		free(raw);
	} else if (namelen == 23 &&
	           memcmp(name, "grpc-status-details-bin", 23) == 0) {
		/* Malformed base64 is dropped, as gRPC libraries do. */
		size_t n = 0;
		uint8_t *bytes =
		    grpc_base64_decode((const char *)value, valuelen, &n);
		if (bytes != NULL) {
			free(call->grpc_details);
			call->grpc_details = bytes;
			call->grpc_details_len = n;
		}
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags,
                         int32_t stream_id, const uint8_t *data, size_t len,
                         void *user_data)
{
	grpc_client *c = user_data;
	client_call *call =
	    nghttp2_session_get_stream_user_data(session, stream_id);
	if (call == NULL || call->local_status >= 0)
		return 0;
	while (len > 0) {
		uint8_t *msg;
		size_t msg_len;
		uint32_t declared = 0;
		int rv = grpc_deframe(&call->deframer, &data, &len,
		                      c->options.max_receive_message_size, &msg,
		                      &msg_len, &declared);
		if (rv == GRPC_DEFRAME_MORE)
			break;
		if (rv == GRPC_DEFRAME_TOOBIG) {
			char text[96];
			snprintf(
			    text, sizeof(text),
			    "received message larger than max (%u vs. %zu)",
			    declared, c->options.max_receive_message_size);
			call_abort(call, GRPC_STATUS_RESOURCE_EXHAUSTED, text);
			return 0;
		}
		if (rv == GRPC_DEFRAME_COMPRESSED ||
		    rv == GRPC_DEFRAME_BADFLAG) {
			call_abort(call, GRPC_STATUS_INTERNAL,
			           rv == GRPC_DEFRAME_BADFLAG
			               ? "response with an invalid compressed "
			                 "flag"
			               : "compressed response without "
			                 "grpc-encoding");
			return 0;
		}
		call->message_count++;
		if (call->on_message != NULL) {
			int stop =
			    call->on_message(call->message_ctx, msg, msg_len);
			free(msg);
			if (stop) {
				call_abort(call, GRPC_STATUS_CANCELLED,
				           "cancelled by the client");
				return 0;
			}
		} else {
			free(call->last);
			call->last = msg;
			call->last_len = msg_len;
		}
	}
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id,
                           uint32_t error_code, void *user_data)
{
	client_call *call =
	    nghttp2_session_get_stream_user_data(session, stream_id);
	if (call == NULL)
		return 0;
	if (call->grpc_status < 0 && call->local_status < 0 &&
	    (call->http_status == 0 || call->http_status == 200) &&
	    error_code != NGHTTP2_NO_ERROR) {
		char text[96];
		snprintf(text, sizeof(text), "stream reset by the server: %s",
		         nghttp2_http2_strerror(error_code));
		call->refused = error_code == NGHTTP2_REFUSED_STREAM;
		call_set_local(call,
		               error_code == NGHTTP2_REFUSED_STREAM
		                   ? GRPC_STATUS_UNAVAILABLE
		               : error_code == NGHTTP2_CANCEL
		                   ? GRPC_STATUS_CANCELLED
		                   : GRPC_STATUS_INTERNAL,
		               text);
	} else if (call->grpc_status >= 0 && call->local_status < 0 &&
	           grpc_deframer_partial(&call->deframer) &&
	           call->grpc_status == GRPC_STATUS_OK) {
		call_set_local(call, GRPC_STATUS_INTERNAL,
		               "response ended inside a message");
	}
	call->done = true;
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                         void *user_data)
{
	(void)session;
	grpc_client *c = user_data;
	if (frame->hd.type == NGHTTP2_GOAWAY)
		c->goaway = true;
	return 0;
}

static ssize_t request_read_cb(nghttp2_session *session, int32_t stream_id,
                               uint8_t *buf, size_t length,
                               uint32_t *data_flags,
                               nghttp2_data_source *source, void *user_data)
{
	client_call *call = source->ptr;
	while (grpc_buf_size(&call->out) == 0 && !call->out_eof) {
		if (call->next == NULL) {
			call->out_eof = true;
			break;
		}
		const void *data;
		size_t len;
		int rv = call->next(call->next_ctx, &data, &len);
		if (rv < 0) {
			call_set_local(call, GRPC_STATUS_CANCELLED,
			               "cancelled by the client");
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		}
		if (rv == 0)
			call->out_eof = true;
		else
			grpc_buf_append_message(&call->out, data, len);
	}
	size_t n = grpc_buf_size(&call->out);
	if (n > length)
		n = length;
	if (n > 0) {
		memcpy(buf, call->out.data + call->out.head, n);
		grpc_buf_consume(&call->out, n);
	}
	if (call->out_eof && grpc_buf_size(&call->out) == 0)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* ===================================================================== */
/* Connection I/O                                                        */
/* ===================================================================== */

static void client_break(grpc_client *c, const char *why)
{
	if (c->broken == NULL)
		c->broken = xstrdup(why);
}

/* Writes pending output; 0 when everything went out, 1 when the socket
 * would block, -1 on error. */
static int client_flush(grpc_client *c)
{
	for (;;) {
		while (grpc_buf_size(&c->outbuf) > 0) {
			ssize_t n = grpc_io_write(
			    &c->io, c->outbuf.data + c->outbuf.head,
			    grpc_buf_size(&c->outbuf));
			if (n == GRPC_IO_AGAIN)
				return 1;
			if (n < 0)
				return -1;
			grpc_buf_consume(&c->outbuf, (size_t)n);
		}
		bool any = false;
		while (grpc_buf_size(&c->outbuf) < 65536) {
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(c->session, &data);
			if (n < 0)
				return -1;
			if (n == 0)
				break;
			grpc_buf_append(&c->outbuf, data, (size_t)n);
			any = true;
		}
		if (!any)
			return 0;
	}
}

static int client_read(grpc_client *c)
{
	uint8_t buf[16384];
	for (;;) {
		ssize_t n = grpc_io_read(&c->io, buf, sizeof(buf));
		if (n == GRPC_IO_AGAIN)
			return 0;
		if (n <= 0)
			return -1;
		if (nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0)
			return -1;
	}
}

/* Drives the connection until every call in calls[0..n) is done. */
static void client_run(grpc_client *c, client_call **calls, size_t n)
{
	for (;;) {
		int flushed = c->broken ? -1 : client_flush(c);
		if (flushed < 0)
			client_break(c, "connection lost while writing");
		size_t open = 0;
		int64_t now = grpc_now_ns(), next = 0;
		for (size_t i = 0; i < n; i++) {
			client_call *call = calls[i];
			if (call->done)
				continue;
			if (c->broken != NULL) {
				call_set_local(call, GRPC_STATUS_UNAVAILABLE,
				               c->broken);
				call->done = true;
				continue;
			}
			if (call->deadline != 0 && call->deadline <= now) {
				call_abort(call, GRPC_STATUS_DEADLINE_EXCEEDED,
				           "deadline exceeded (client side)");
				call->done = true;
				continue;
			}
			if (call->local_status >= 0 && call->stream_id <= 0) {
				call->done = true;
				continue;
			}
			open++;
			if (call->deadline != 0 &&
			    (next == 0 || call->deadline < next))
				next = call->deadline;
		}
		if (open == 0) {
			/* Send any RST_STREAM just queued, best effort. */
			if (c->broken == NULL && client_flush(c) < 0)
				client_break(c,
				             "connection lost while writing");
			return;
		}
		if (!nghttp2_session_want_read(c->session) &&
		    !nghttp2_session_want_write(c->session) &&
		    grpc_buf_size(&c->outbuf) == 0) {
			client_break(c, "connection closed by the server");
			continue;
		}
		int timeout = -1;
		if (next != 0) {
			int64_t ms = (next - now + 999999) / 1000000;
			timeout = ms > 60000 ? 60000 : (int)ms;
		}
		struct pollfd pfd = {.fd = c->io.fd, .events = POLLIN};
		if (flushed == 1 || c->io.ssl_wants_write)
			pfd.events |= POLLOUT;
		/* TLS may hold decrypted bytes that poll cannot see. */
		if (c->io.ssl != NULL && SSL_pending(c->io.ssl) > 0)
			timeout = 0;
		int r = poll(&pfd, 1, timeout);
		if (r < 0 && errno != EINTR) {
			client_break(c, "poll failed");
			continue;
		}
		if ((r > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) ||
		    (c->io.ssl != NULL && SSL_pending(c->io.ssl) > 0)) {
			if (client_read(c) != 0)
				client_break(c,
				             "connection closed by the server");
		}
	}
}

/* Submits one request; on failure the call is done with a local status. */
static void client_submit(grpc_client *c, client_call *call, const char *path,
                          const grpc_metadata *md, size_t md_count,
                          int timeout_ms)
{
	if (c->broken != NULL) {
		call_set_local(call, GRPC_STATUS_UNAVAILABLE, c->broken);
		call->done = true;
		return;
	}
	nghttp2_nv nv[8 + md_count];
	char timeout_text[16];
	char *encoded[md_count + 1];
	size_t n = 0;
#define NV(a, b)                                                               \
	((nghttp2_nv){(uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b),    \
	              NGHTTP2_NV_FLAG_NONE})
	nv[n++] = NV(":method", "POST");
	nv[n++] = NV(":scheme", c->options.tls ? "https" : "http");
	nv[n++] = NV(":path", path);
	nv[n++] = NV(":authority", c->authority);
	nv[n++] = NV("te", "trailers");
	nv[n++] = NV("content-type", "application/grpc");
	nv[n++] = NV("user-agent", "pemba-grpc/"
	                           "0.1");
	if (timeout_ms > 0) {
		/* grpc-timeout allows 8 digits. */
		if (timeout_ms < 100000000)
			snprintf(timeout_text, sizeof(timeout_text), "%dm",
			         timeout_ms);
		else
			snprintf(timeout_text, sizeof(timeout_text), "%dS",
			         timeout_ms / 1000);
		nv[n++] = NV("grpc-timeout", timeout_text);
		call->deadline = grpc_now_ns() + (int64_t)timeout_ms * 1000000 +
		                 LOCAL_DEADLINE_GRACE_NS;
	}
	size_t encoded_count = 0;
	for (size_t i = 0; i < md_count; i++) {
		size_t name_len = strlen(md[i].name);
		size_t value_len =
		    md[i].value_len ? md[i].value_len : strlen(md[i].value);
		const char *value = md[i].value;
		if (name_len > 4 &&
		    strcmp(md[i].name + name_len - 4, "-bin") == 0) {
			encoded[encoded_count] =
			    grpc_base64_encode(md[i].value, value_len);
			value = encoded[encoded_count++];
			value_len = strlen(value);
		}
		nv[n++] =
		    (nghttp2_nv){(uint8_t *)md[i].name, (uint8_t *)value,
		                 name_len, value_len, NGHTTP2_NV_FLAG_NONE};
	}
#undef NV
	nghttp2_data_provider provider = {.source.ptr = call,
	                                  .read_callback = request_read_cb};
	int32_t id =
	    nghttp2_submit_request(c->session, NULL, nv, n, &provider, call);
	for (size_t i = 0; i < encoded_count; i++)
		free(encoded[i]);
	if (id < 0) {
		call_set_local(call, GRPC_STATUS_UNAVAILABLE,
		               nghttp2_strerror(id));
		call->done = true;
		return;
	}
	call->stream_id = id;
}

/* ===================================================================== */
/* Connecting                                                            */
/* ===================================================================== */

void grpc_client_options_init(grpc_client_options *options)
{
	memset(options, 0, sizeof(*options));
}

static int tcp_connect(grpc_client *c, int port, pemba_error *err)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res;
	char port_text[16];
	snprintf(port_text, sizeof(port_text), "%d", port);
	int rv = getaddrinfo(c->host[0] ? c->host : "localhost", port_text,
	                     &hints, &res);
	if (rv != 0)
		return error_set(err, PEMBA_EIO, "cannot resolve \"%s\": %s",
		                 c->host, gai_strerror(rv));
	int fd = -1, saved = ECONNREFUSED;
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family,
		            ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			int r = poll(&pfd, 1, c->options.connect_timeout_ms);
			int so_error = ETIMEDOUT;
			socklen_t len = sizeof(so_error);
			if (r > 0)
				getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error,
				           &len);
			if (r > 0 && so_error == 0)
				break;
			saved = so_error;
		} else {
			saved = errno;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return error_set(err, PEMBA_EIO, "cannot connect to %s: %s",
		                 c->options.target, strerror(saved));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->io.fd = fd;
	return 0;
}

/* Connects to the unix-domain socket at path (target "unix:PATH" or
 * "unix://ABSOLUTE_PATH", as gRPC names them).  Blocking connect: a local
 * socket either accepts at once or refuses. */
static int unix_connect(grpc_client *c, const char *path, pemba_error *err)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (path[0] == '\0' || strlen(path) >= sizeof(addr.sun_path))
		return error_set(err, PEMBA_EINVAL,
		                 "bad unix socket path in \"%s\"",
		                 c->options.target);
	memcpy(addr.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		int saved = errno;
		if (fd >= 0)
			close(fd);
		return error_set(err, PEMBA_EIO, "cannot connect to %s: %s",
		                 c->options.target, strerror(saved));
	}
	/* The rest of the client expects a non-blocking descriptor. */
	int flags = fcntl(fd, F_GETFL, 0);
	fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	c->io.fd = fd;
	return 0;
}

static int tls_connect(grpc_client *c, pemba_error *err)
{
	c->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (c->ssl_ctx == NULL)
		return error_set(err, PEMBA_EIO, "cannot create TLS context");
	SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(c->ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (!c->options.insecure_skip_verify) {
		SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
		int ok = c->options.ca_file != NULL
		             ? SSL_CTX_load_verify_locations(
		                   c->ssl_ctx, c->options.ca_file, NULL)
		             : SSL_CTX_set_default_verify_paths(c->ssl_ctx);
		if (ok != 1)
			return error_set(err, PEMBA_EIO,
			                 "cannot load CA certificates \"%s\"",
			                 c->options.ca_file ? c->options.ca_file
			                                    : "(system)");
	}
	SSL *ssl = SSL_new(c->ssl_ctx);
	if (ssl == NULL || grpc_io_attach_ssl(ssl, c->io.fd) != 0) {
		SSL_free(ssl);
		return error_set(err, PEMBA_EIO, "cannot create TLS session");
	}
	c->io.ssl = ssl;
	const char *name =
	    c->options.server_name ? c->options.server_name : c->host;
	unsigned char addr[16];
	bool is_ip = inet_pton(AF_INET, name, addr) == 1 ||
	             inet_pton(AF_INET6, name, addr) == 1;
	if (!is_ip && name[0])
		SSL_set_tlsext_host_name(ssl, name);
	if (!c->options.insecure_skip_verify) {
		X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
		if (is_ip)
			X509_VERIFY_PARAM_set1_ip_asc(param, name);
		else
			X509_VERIFY_PARAM_set1_host(param, name, 0);
	}
	static const unsigned char alpn[] = "\x02h2";
	SSL_set_alpn_protos(ssl, alpn, sizeof(alpn) - 1);
	SSL_set_connect_state(ssl);
	int64_t deadline =
	    grpc_now_ns() + (int64_t)c->options.connect_timeout_ms * 1000000;
	for (;;) {
		ERR_clear_error();
		int r = SSL_do_handshake(ssl);
		if (r == 1)
			break;
		int e = SSL_get_error(ssl, r);
		struct pollfd pfd = {.fd = c->io.fd};
		if (e == SSL_ERROR_WANT_READ)
			pfd.events = POLLIN;
		else if (e == SSL_ERROR_WANT_WRITE)
			pfd.events = POLLOUT;
		else {
			char reason[256];
			ERR_error_string_n(ERR_get_error(), reason,
			                   sizeof(reason));
			long verify = SSL_get_verify_result(ssl);
			return error_set(
			    err, PEMBA_EIO,
			    "TLS handshake with %s failed: %s%s%s",
			    c->options.target, reason,
			    verify != X509_V_OK ? "; " : "",
			    verify != X509_V_OK
			        ? X509_verify_cert_error_string(verify)
			        : "");
		}
		int64_t left = (deadline - grpc_now_ns()) / 1000000;
		if (left <= 0 || poll(&pfd, 1, (int)left) == 0)
			return error_set(err, PEMBA_EIO,
			                 "TLS handshake with %s timed out",
			                 c->options.target);
	}
	const unsigned char *selected = NULL;
	unsigned int selected_len = 0;
	SSL_get0_alpn_selected(ssl, &selected, &selected_len);
	if (selected_len != 2 || memcmp(selected, "h2", 2) != 0)
		return error_set(err, PEMBA_EIO,
		                 "server %s did not negotiate HTTP/2 (ALPN h2)",
		                 c->options.target);
	return 0;
}

int grpc_client_connect(const grpc_client_options *options, grpc_client **out,
                        pemba_error *err)
{
	*out = NULL;
	int port = 0;
	char *host = NULL;
	const char *unix_path = NULL;
	if (options->target != NULL &&
	    strncmp(options->target, "unix:", 5) == 0) {
		unix_path = options->target + 5;
		if (strncmp(unix_path, "//", 2) == 0)
			unix_path += 2;
		host = xstrdup("localhost");
	} else if (options->target == NULL ||
	           grpc_split_host_port(options->target, &host, &port) != 0)
		return error_set(err, PEMBA_EINVAL,
		                 "bad endpoint \"%s\" (want host:port or "
		                 "unix:path)",
		                 options->target ? options->target : "");
	grpc_client *c = xcalloc(1, sizeof(*c));
	c->options = *options;
	c->options.target = NULL; /* not owned; only used in messages below */
	if (c->options.connect_timeout_ms <= 0)
		c->options.connect_timeout_ms = DEFAULT_CONNECT_MS;
	if (c->options.max_receive_message_size == 0)
		c->options.max_receive_message_size = DEFAULT_MAX_MESSAGE;
	c->options.target = options->target;
	c->host = host;
	/* A unix socket has no host name: send "localhost", as gRPC does. */
	c->authority = xstrdup(unix_path ? "localhost" : options->target);
	c->io.fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	int rv = unix_path ? unix_connect(c, unix_path, err)
	                   : tcp_connect(c, port, err);
	if (rv == 0 && c->options.tls)
		rv = tls_connect(c, err);
	if (rv == 0) {
		nghttp2_session_callbacks *cb;
		nghttp2_session_callbacks_new(&cb);
		nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
		nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
		    cb, on_data_chunk);
		nghttp2_session_callbacks_set_on_stream_close_callback(
		    cb, on_stream_close);
		nghttp2_session_callbacks_set_on_frame_recv_callback(
		    cb, on_frame_recv);
		if (nghttp2_session_client_new(&c->session, cb, c) != 0)
			rv = error_set(err, PEMBA_EIO, "cannot create session");
		nghttp2_session_callbacks_del(cb);
	}
	if (rv == 0) {
		nghttp2_settings_entry settings[] = {
		    {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
		    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
		};
		nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings,
		                        2);
		nghttp2_session_set_local_window_size(
		    c->session, NGHTTP2_FLAG_NONE, 0, 16 << 20);
		if (client_flush(c) < 0)
			rv = error_set(
			    err, PEMBA_EIO,
			    "connection to %s lost during the preface",
			    options->target);
	}
	c->options.target = NULL; /* the caller's string may go away */
	if (rv != 0) {
		grpc_client_close(c);
		return rv;
	}
	*out = c;
	return 0;
}

void grpc_client_close(grpc_client *c)
{
	if (c == NULL)
		return;
	if (c->session != NULL) {
		if (c->broken == NULL) {
			nghttp2_session_terminate_session(c->session,
			                                  NGHTTP2_NO_ERROR);
			client_flush(c);
		}
		nghttp2_session_del(c->session);
	}
	if (c->io.ssl != NULL)
		SSL_free(c->io.ssl);
	if (c->ssl_ctx != NULL)
		SSL_CTX_free(c->ssl_ctx);
	if (c->io.fd >= 0)
		close(c->io.fd);
	grpc_buf_free(&c->outbuf);
	pthread_mutex_destroy(&c->lock);
	free(c->host);
	free(c->authority);
	free(c->broken);
	free(c);
}

void grpc_client_abort(grpc_client *c)
{
	/* The descriptor is set at connect and closed only by
	 * grpc_client_close, so reading it here races with nothing. */
	if (c != NULL && c->io.fd >= 0)
		shutdown(c->io.fd, SHUT_RDWR);
}

/* ===================================================================== */
/* Calls                                                                 */
/* ===================================================================== */

/* Runs one call whose fields are set up; returns its status code. */
static int run_one(grpc_client *c, client_call *call, const char *path,
                   const grpc_metadata *md, size_t md_count, int timeout_ms,
                   grpc_status *status)
{
	pthread_mutex_lock(&c->lock);
	client_submit(c, call, path, md, md_count, timeout_ms);
	client_call *list[1] = {call};
	client_run(c, list, 1);
	if (call->stream_id > 0 && c->session != NULL)
		nghttp2_session_set_stream_user_data(c->session,
		                                     call->stream_id, NULL);
	pthread_mutex_unlock(&c->lock);
	return call_status(call, status);
}

int grpc_client_unary(grpc_client *client, const char *path,
                      const grpc_metadata *md, size_t md_count, int timeout_ms,
                      const void *request, size_t request_len,
                      uint8_t **response, size_t *response_len,
                      grpc_status *status)
{
	client_call call;
	call_init(&call, client);
	grpc_buf_append_message(&call.out, request, request_len);
	call.out_eof = true;
	*response = NULL;
	*response_len = 0;
	int code =
	    run_one(client, &call, path, md, md_count, timeout_ms, status);
	if (code == GRPC_STATUS_OK && call.message_count != 1) {
		grpc_status_clear(status);
		status->code = code = GRPC_STATUS_INTERNAL;
		status->message = xstrdup(
		    call.message_count == 0
		        ? "no response message for a unary call"
		        : "too many response messages for a unary call");
	}
	if (code == GRPC_STATUS_OK) {
		*response = call.last;
		*response_len = call.last_len;
		call.last = NULL;
	}
	call_cleanup(&call);
	return code;
}

int grpc_client_server_streaming(grpc_client *client, const char *path,
                                 const grpc_metadata *md, size_t md_count,
                                 int timeout_ms, const void *request,
                                 size_t request_len, grpc_message_fn on_message,
                                 void *ctx, grpc_status *status)
{
	client_call call;
	call_init(&call, client);
	grpc_buf_append_message(&call.out, request, request_len);
	call.out_eof = true;
	call.on_message = on_message;
	call.message_ctx = ctx;
	int code =
	    run_one(client, &call, path, md, md_count, timeout_ms, status);
	call_cleanup(&call);
	return code;
}

int grpc_client_streaming(grpc_client *client, const char *path,
                          const grpc_metadata *md, size_t md_count,
                          int timeout_ms, grpc_next_message_fn next_message,
                          void *next_ctx, grpc_message_fn on_message,
                          void *message_ctx, uint8_t **response,
                          size_t *response_len, grpc_status *status)
{
	client_call call;
	call_init(&call, client);
	call.next = next_message;
	call.next_ctx = next_ctx;
	call.on_message = on_message;
	call.message_ctx = message_ctx;
	if (response != NULL) {
		*response = NULL;
		*response_len = 0;
	}
	int code =
	    run_one(client, &call, path, md, md_count, timeout_ms, status);
	if (code == GRPC_STATUS_OK && response != NULL && on_message == NULL) {
		*response = call.last;
		*response_len = call.last_len;
		call.last = NULL;
	}
	call_cleanup(&call);
	return code;
}

int grpc_client_unary_batch(grpc_client *client, const grpc_metadata *md,
                            size_t md_count, int timeout_ms,
                            grpc_unary_call *calls, size_t count)
{
	client_call *state = xcalloc(count ? count : 1, sizeof(*state));
	client_call **list = xcalloc(count ? count : 1, sizeof(*list));
	pthread_mutex_lock(&client->lock);
	for (size_t i = 0; i < count; i++) {
		call_init(&state[i], client);
		grpc_buf_append_message(&state[i].out, calls[i].request,
		                        calls[i].request_len);
		state[i].out_eof = true;
		list[i] = &state[i];
		client_submit(client, &state[i], calls[i].path, md, md_count,
		              timeout_ms);
	}
	client_run(client, list, count);
	int ok = 0;
	for (size_t i = 0; i < count; i++) {
		client_call *call = &state[i];
		if (call->stream_id > 0 && client->session != NULL)
			nghttp2_session_set_stream_user_data(
			    client->session, call->stream_id, NULL);
		int code = call_status(call, &calls[i].status);
		calls[i].response = NULL;
		calls[i].response_len = 0;
		if (code == GRPC_STATUS_OK && call->message_count != 1) {
			grpc_status_clear(&calls[i].status);
			calls[i].status.code = code = GRPC_STATUS_INTERNAL;
			calls[i].status.message =
			    xstrdup("unary call without exactly one response");
		}
		if (code == GRPC_STATUS_OK) {
			calls[i].response = call->last;
			calls[i].response_len = call->last_len;
			call->last = NULL;
			ok++;
		}
		call_cleanup(call);
	}
	pthread_mutex_unlock(&client->lock);
	free(state);
	free(list);
	return ok;
}

/* ===================================================================== */
/* Multiplexing client                                                   */
/* ===================================================================== */

/*
 * The mux thread owns the connection (a grpc_client used only from that
 * thread) and every call in flight; other threads only append to the
 * submission queue under `lock` and write the eventfd.  One loop turn:
 * take the queue, submit what it holds, write, wait (poll on the socket
 * and the eventfd, up to the nearest deadline), read, and hand every
 * finished call to its `done`.  Under load a turn carries many calls both
 * ways, so the cost of waking the thread is shared among them.
 */

typedef struct mux_call {
	client_call cc; /* first: nghttp2's stream user data points here */
	struct mux_call *next;
	char *path;
	grpc_metadata *md; /* copies */
	size_t md_count;
	int timeout_ms;
	uint8_t *request;
	size_t request_len;
	bool retried;
	grpc_mux_done_fn done;
	void *ctx;
} mux_call;

struct grpc_mux {
	grpc_client_options options; /* strings below are the mux's copies */
	char *target, *ca_file, *server_name;
	pthread_t thread;
	int wake_fd;
	pthread_mutex_t lock;
	mux_call *queue_head, *queue_tail; /* under lock */
	bool stop;                         /* under lock */
	/* mux thread only */
	grpc_client *c;
	mux_call *flight; /* submitted on c, not yet done */
};

static void mux_call_free(mux_call *m)
{
	call_cleanup(&m->cc);
	free(m->path);
	for (size_t i = 0; i < m->md_count; i++) {
		free((char *)m->md[i].name);
		free((char *)m->md[i].value);
	}
	free(m->md);
	free(m->request);
	free(m);
}

/* Hands a finished call to its owner and frees it. */
static void mux_complete(mux_call *m)
{
	grpc_status st;
	int code = call_status(&m->cc, &st);
	uint8_t *resp = NULL;
	size_t resp_len = 0;
	if (code == GRPC_STATUS_OK && m->cc.message_count != 1) {
		grpc_status_clear(&st);
		st.code = code = GRPC_STATUS_INTERNAL;
		st.message = xstrdup(m->cc.message_count == 0
		                         ? "no response message for a unary call"
		                         : "too many response messages for a "
		                           "unary call");
	}
	if (code == GRPC_STATUS_OK) {
		resp = m->cc.last;
		resp_len = m->cc.last_len;
		m->cc.last = NULL;
	}
	m->done(m->ctx, code, resp, resp_len, &st, m->request,
	        m->request_len);
	mux_call_free(m);
}

/* Ends a call that never reached a connection. */
static void mux_fail(mux_call *m, int code, const char *message)
{
	call_set_local(&m->cc, code, message);
	m->cc.done = true;
	mux_complete(m);
}

/* Resets a call's per-connection state so it can be submitted (again). */
static void mux_prepare(mux_call *m, grpc_client *c)
{
	call_cleanup(&m->cc);
	call_init(&m->cc, c);
	grpc_buf_append_message(&m->cc.out, m->request, m->request_len);
	m->cc.out_eof = true;
}

/* Closes the connection; its calls in flight end UNAVAILABLE (or are
 * queued again, once, when the server never processed them). */
static void mux_drop_connection(grpc_mux *x, mux_call **retry)
{
	grpc_client *c = x->c;
	const char *why = c->broken ? c->broken : "connection closed";
	for (mux_call *m = x->flight, *next; m != NULL; m = next) {
		next = m->next;
		if (m->cc.done && m->cc.refused && !m->retried) {
			m->retried = true;
			m->next = *retry;
			*retry = m;
			continue;
		}
		if (!m->cc.done) {
			call_set_local(&m->cc, GRPC_STATUS_UNAVAILABLE, why);
			m->cc.done = true;
		}
		mux_complete(m);
	}
	x->flight = NULL;
	grpc_client_close(c);
	x->c = NULL;
}

/* Submits one call on the connection, connecting first when there is
 * none.  A failed connect fails the call, and the rest of the turn's
 * calls with the same message (*connect_error) without trying again: an
 * unreachable server costs one connect timeout per turn, not per call. */
static void mux_submit(grpc_mux *x, mux_call *m, char **connect_error)
{
	if (x->c == NULL && *connect_error != NULL) {
		mux_fail(m, GRPC_STATUS_UNAVAILABLE, *connect_error);
		return;
	}
	if (x->c == NULL) {
		pemba_error err = {0};
		grpc_client_options o = x->options;
		if (grpc_client_connect(&o, &x->c, &err) != 0) {
			x->c = NULL;
			*connect_error = xstrdup(err.message);
			mux_fail(m, GRPC_STATUS_UNAVAILABLE, err.message);
			return;
		}
	}
	mux_prepare(m, x->c);
	client_submit(x->c, &m->cc, m->path, m->md, m->md_count,
	              m->timeout_ms);
	if (m->cc.done) {
		mux_complete(m);
		return;
	}
	m->next = x->flight;
	x->flight = m;
}

static void *mux_main(void *arg)
{
	grpc_mux *x = arg;
	mux_call *held = NULL; /* waiting for a connection without GOAWAY */
	for (;;) {
		pthread_mutex_lock(&x->lock);
		mux_call *q = x->queue_head;
		x->queue_head = x->queue_tail = NULL;
		bool stop = x->stop;
		pthread_mutex_unlock(&x->lock);
		/* Arrival order: held calls first, then the queue. */
		if (held != NULL) {
			mux_call *last = held;
			while (last->next != NULL)
				last = last->next;
			last->next = q;
			q = held;
			held = NULL;
		}
		if (stop) {
			for (mux_call *m = q, *next; m != NULL; m = next) {
				next = m->next;
				mux_fail(m, GRPC_STATUS_CANCELLED,
				         "the relay is shutting down");
			}
			for (mux_call *m = x->flight; m != NULL; m = m->next)
				call_abort(&m->cc, GRPC_STATUS_CANCELLED,
				           "the relay is shutting down");
			if (x->c != NULL) {
				client_flush(x->c);
				client_break(x->c, "the relay is shutting down");
				mux_call *none = NULL;
				mux_drop_connection(x, &none);
			}
			return NULL;
		}
		/* After a GOAWAY the connection takes no new streams: new
		 * calls wait until its last call is done, then go to a new
		 * connection. */
		char *connect_error = NULL;
		for (mux_call *m = q, *next; m != NULL; m = next) {
			next = m->next;
			if (x->c != NULL && x->c->goaway) {
				m->next = held;
				held = m;
				continue;
			}
			mux_submit(x, m, &connect_error);
		}
		free(connect_error);
		int64_t now = grpc_now_ns(), due = 0;
		int flushed = 0;
		if (x->c != NULL) {
			flushed = x->c->broken ? -1 : client_flush(x->c);
			if (flushed < 0)
				client_break(x->c, "connection lost while writing");
			for (mux_call *m = x->flight; m != NULL; m = m->next) {
				if (m->cc.done)
					continue;
				if (m->cc.deadline != 0 && m->cc.deadline <= now) {
					call_abort(&m->cc,
					           GRPC_STATUS_DEADLINE_EXCEEDED,
					           "deadline exceeded (client side)");
					m->cc.done = true;
				} else if (m->cc.deadline != 0 &&
				           (due == 0 || m->cc.deadline < due)) {
					due = m->cc.deadline;
				}
			}
		}
		int timeout = -1;
		if (due != 0) {
			int64_t ms = (due - now + 999999) / 1000000;
			timeout = ms > 60000 ? 60000 : (int)ms;
		}
		struct pollfd pfd[2] = {{.fd = x->wake_fd, .events = POLLIN},
		                        {.fd = -1}};
		if (x->c != NULL && x->c->broken == NULL) {
			pfd[1].fd = x->c->io.fd;
			pfd[1].events = POLLIN;
			if (flushed == 1 || x->c->io.ssl_wants_write)
				pfd[1].events |= POLLOUT;
			if (x->c->io.ssl != NULL && SSL_pending(x->c->io.ssl) > 0)
				timeout = 0;
		}
		bool finished_any = false;
		for (mux_call *m = x->flight; m != NULL; m = m->next)
			finished_any |= m->cc.done;
		if (finished_any || (x->c != NULL && x->c->broken != NULL) ||
		    (held != NULL && x->flight == NULL))
			timeout = 0;
		int r = poll(pfd, 2, timeout);
		if (r < 0 && errno != EINTR && x->c != NULL)
			client_break(x->c, "poll failed");
		if (r > 0 && (pfd[0].revents & POLLIN)) {
			uint64_t v;
			ssize_t n = read(x->wake_fd, &v, sizeof(v));
			(void)n;
		}
		if (x->c != NULL && x->c->broken == NULL &&
		    ((r > 0 && (pfd[1].revents & (POLLIN | POLLHUP | POLLERR))) ||
		     (x->c->io.ssl != NULL && SSL_pending(x->c->io.ssl) > 0))) {
			if (client_read(x->c) != 0)
				client_break(x->c,
				             "connection closed by the server");
		}
		if (x->c != NULL && x->c->broken == NULL &&
		    !nghttp2_session_want_read(x->c->session) &&
		    !nghttp2_session_want_write(x->c->session) &&
		    grpc_buf_size(&x->c->outbuf) == 0)
			client_break(x->c, "connection closed by the server");
		if (x->c == NULL)
			continue;
		if (x->c->broken != NULL ||
		    (x->c->goaway && x->flight == NULL)) {
			mux_call *retry = NULL;
			mux_drop_connection(x, &retry);
			for (mux_call *m = retry; m != NULL;) {
				mux_call *next = m->next;
				m->next = held;
				held = m;
				m = next;
			}
			continue;
		}
		/* Hand over what finished; the stream forgets the call. */
		mux_call **link = &x->flight;
		while (*link != NULL) {
			mux_call *m = *link;
			if (!m->cc.done) {
				link = &m->next;
				continue;
			}
			*link = m->next;
			if (m->cc.stream_id > 0)
				nghttp2_session_set_stream_user_data(
				    x->c->session, m->cc.stream_id, NULL);
			if (m->cc.refused && !m->retried) {
				m->retried = true;
				m->next = held;
				held = m;
				continue;
			}
			mux_complete(m);
		}
	}
}

int grpc_mux_new(const grpc_client_options *options, grpc_mux **out,
                 pemba_error *err)
{
	*out = NULL;
	if (options->target == NULL || !*options->target)
		return error_set(err, PEMBA_EINVAL, "mux: no target");
	grpc_mux *x = xcalloc(1, sizeof(*x));
	x->options = *options;
	x->target = xstrdup(options->target);
	x->ca_file = options->ca_file ? xstrdup(options->ca_file) : NULL;
	x->server_name =
	    options->server_name ? xstrdup(options->server_name) : NULL;
	x->options.target = x->target;
	x->options.ca_file = x->ca_file;
	x->options.server_name = x->server_name;
	x->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (x->wake_fd < 0) {
		int e = errno;
		free(x->target);
		free(x->ca_file);
		free(x->server_name);
		free(x);
		return error_set(err, PEMBA_EIO, "eventfd: %s", strerror(e));
	}
	pthread_mutex_init(&x->lock, NULL);
	int rc = pthread_create(&x->thread, NULL, mux_main, x);
	if (rc != 0) {
		close(x->wake_fd);
		pthread_mutex_destroy(&x->lock);
		free(x->target);
		free(x->ca_file);
		free(x->server_name);
		free(x);
		return error_set(err, PEMBA_EIO, "cannot start a thread: %s",
		                 strerror(rc));
	}
	*out = x;
	return 0;
}

void grpc_mux_unary(grpc_mux *x, const char *path, const grpc_metadata *md,
                    size_t md_count, int timeout_ms, const void *request,
                    size_t request_len, grpc_mux_done_fn done, void *ctx)
{
	mux_call *m = xcalloc(1, sizeof(*m));
	call_init(&m->cc, NULL);
	m->path = xstrdup(path);
	m->md = xcalloc(md_count ? md_count : 1, sizeof(*m->md));
	for (size_t i = 0; i < md_count; i++) {
		size_t len =
		    md[i].value_len ? md[i].value_len : strlen(md[i].value);
		char *v = xmalloc(len + 1);
		memcpy(v, md[i].value, len);
		v[len] = 0;
		m->md[i] = (grpc_metadata){xstrdup(md[i].name), v, len};
	}
	m->md_count = md_count;
	m->timeout_ms = timeout_ms;
	m->request = xmalloc(request_len ? request_len : 1);
	memcpy(m->request, request, request_len);
	m->request_len = request_len;
	m->done = done;
	m->ctx = ctx;
	pthread_mutex_lock(&x->lock);
	if (x->stop) {
		pthread_mutex_unlock(&x->lock);
		mux_fail(m, GRPC_STATUS_CANCELLED, "the relay is shutting down");
		return;
	}
	bool wake = x->queue_head == NULL;
	if (x->queue_tail != NULL)
		x->queue_tail->next = m;
	else
		x->queue_head = m;
	x->queue_tail = m;
	pthread_mutex_unlock(&x->lock);
	if (wake) {
		uint64_t one = 1;
		ssize_t n = write(x->wake_fd, &one, sizeof(one));
		(void)n;
	}
}

void grpc_mux_free(grpc_mux *x)
{
	if (x == NULL)
		return;
	pthread_mutex_lock(&x->lock);
	x->stop = true;
	pthread_mutex_unlock(&x->lock);
	uint64_t one = 1;
	ssize_t n = write(x->wake_fd, &one, sizeof(one));
	(void)n;
	pthread_join(x->thread, NULL);
	close(x->wake_fd);
	pthread_mutex_destroy(&x->lock);
	free(x->target);
	free(x->ca_file);
	free(x->server_name);
	free(x);
}
