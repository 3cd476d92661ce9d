/*
 * http_endpoint.c -- a small HTTP/1.1 server (libmicrohttpd) for GET
 * /metrics and GET /healthz: what `pemba serve` (observe.c) and `pemba
 * mirror --metrics-addr` expose.
 *
 * Bounded: one internal polling thread, at most HTTP_CONNECTION_LIMIT
 * connections, HTTP_TIMEOUT_SECONDS of idleness, HTTP_MEMORY_LIMIT bytes
 * per connection (request line and headers), GET and HEAD only, two
 * paths.  The address is bound here, not by libmicrohttpd, so a busy port
 * is a plain bind error for the caller to name.
 */
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics/metrics.h"
#include "server/server.h"
#include "util/strbuf.h"
#include "util/xalloc.h"

#define HTTP_CONNECTION_LIMIT 32
#define HTTP_TIMEOUT_SECONDS 10
#define HTTP_MEMORY_LIMIT (16 * 1024)

static void write_own_metrics(server_http *h, strbuf *out);

struct server_http {
	struct MHD_Daemon *daemon;
	server_http_render_fn render;
	server_http_health_fn health;
	void *ctx;
	metrics_counter requests;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
                             const char *type, char *body, size_t len)
{
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	enum MHD_Result rc = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status,
                                  const char *text)
{
	return reply(conn, status, "text/plain; charset=utf-8", xstrdup(text),
	             strlen(text));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	server_http *h = cls;
	(void)version;
	(void)upload_data;
	(void)con_cls;
	metrics_counter_add(&h->requests, 1);
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		*upload_data_size = 0;
		return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
		                  "only GET is served here\n");
	}
	if (strcmp(url, "/metrics") == 0) {
		strbuf sb;
		strbuf_init(&sb);
		h->render(h->ctx, &sb);
		write_own_metrics(h, &sb);
		size_t len;
		char *text = strbuf_detach(&sb, &len);
		return reply(conn, MHD_HTTP_OK, METRICS_CONTENT_TYPE, text,
		             len);
	}
	if (strcmp(url, "/healthz") == 0) {
		const char *reason;
		if (!h->health || h->health(h->ctx, &reason) == 0)
			return reply_text(conn, MHD_HTTP_OK, "ok\n");
		char text[300];
		snprintf(text, sizeof(text), "%s\n", reason);
		return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text);
	}
	return reply_text(conn, MHD_HTTP_NOT_FOUND,
	                  "not found: try /metrics or /healthz\n");
}

/* Binds "host:port" (":port" all interfaces) into *fd_out and the bound
 * port into *port_out; -1 with why[] filled. */
static int bind_addr(const char *addr, int *fd_out, int *port_out, char *why,
                     size_t why_len)
{
	char host[256];
	const char *port;
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || end[1] != ':' ||
		    (size_t)(end - addr) > sizeof(host)) {
			snprintf(why, why_len, "expected HOST:PORT");
			return -1;
		}
		memcpy(host, addr + 1, (size_t)(end - addr - 1));
		host[end - addr - 1] = '\0';
		port = end + 2;
	} else {
		const char *colon = strrchr(addr, ':');
		if (!colon || (size_t)(colon - addr) >= sizeof(host)) {
			snprintf(why, why_len, "expected HOST:PORT");
			return -1;
		}
		memcpy(host, addr, (size_t)(colon - addr));
		host[colon - addr] = '\0';
		port = colon + 1;
	}
	char *end;
	long p = strtol(port, &end, 10);
	if (!*port || *end || p < 0 || p > 65535) {
		snprintf(why, why_len, "the port must be 0 to 65535");
		return -1;
	}
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	int g = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (g != 0) {
		snprintf(why, why_len, "%s", gai_strerror(g));
		return -1;
	}
	int fd = -1, saved = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, 64) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(why, why_len, "%s", strerror(saved));
		return -1;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	*port_out = ntohs(ss.ss_family == AF_INET6
	                      ? ((struct sockaddr_in6 *)&ss)->sin6_port
	                      : ((struct sockaddr_in *)&ss)->sin_port);
	*fd_out = fd;
	return 0;
}

server_http *server_http_start(const char *addr, server_http_render_fn render,
                               server_http_health_fn health, void *ctx,
                               int *port_out, char *why, size_t why_len)
{
	int fd = -1;
	if (bind_addr(addr, &fd, port_out, why, why_len) != 0)
		return NULL;
	server_http *h = xcalloc(1, sizeof(*h));
	h->render = render;
	h->health = health;
	h->ctx = ctx;
	h->daemon = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL,
	    on_request, h, MHD_OPTION_LISTEN_SOCKET, fd,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONNECTION_LIMIT,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_SECONDS,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_MEMORY_LIMIT,
	    MHD_OPTION_END);
	if (!h->daemon) {
		close(fd);
		free(h);
		snprintf(why, why_len, "cannot start the HTTP server");
		return NULL;
	}
	return h;
}

/* The endpoint's own figures, after the caller's page. */
static void write_own_metrics(server_http *h, strbuf *out)
{
	const union MHD_DaemonInfo *di =
	    MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	metrics_write_header(out, "pemba_http_connections", "gauge",
	                     "Open connections to this metrics endpoint.");
	metrics_write_sample(out, "pemba_http_connections", NULL, 0,
	                     di ? di->num_connections : 0);
	metrics_write_header(out, "pemba_http_requests_total", "counter",
	                     "Requests to this metrics endpoint.");
	metrics_write_sample(out, "pemba_http_requests_total", NULL, 0,
	                     (double)metrics_counter_get(&h->requests));
}

void server_http_stop(server_http *h)
{
	if (!h)
		return;
	/* libmicrohttpd closes the listening socket it was given. */
	MHD_stop_daemon(h->daemon);
	free(h);
}
