/*
 * probe.c -- after a failed connection, what does the server speak?
 *
 * A TLS client against a plaintext server fails with OpenSSL's "wrong
 * version number", and a plaintext (h2c) client against a TLS server sees
 * the connection closed: neither says what to do.  client.c asks these
 * probes, each on a fresh connection of its own with 2 s timeouts, and
 * then names the fix (--insecure, or dropping it).
 */
#include "cli/probe.h"

#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/ssl.h>

/* A TCP connection to "host:port" ("[v6]:port" too) with 2 s send and
 * receive timeouts, or -1. */
static int probe_connect(const char *endpoint)
{
	char host[512];
	const char *colon = strrchr(endpoint, ':');
	if (!colon || colon == endpoint || strncmp(endpoint, "unix:", 5) == 0)
		return -1;
	size_t n = (size_t)(colon - endpoint);
	const char *h = endpoint;
	if (h[0] == '[' && n >= 2 && h[n - 1] == ']') {
		h++;
		n -= 2;
	}
	if (n >= sizeof(host))
		return -1;
	memcpy(host, h, n);
	host[n] = '\0';
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
		return -1;
	int fd = -1;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		            ai->ai_protocol);
		if (fd < 0)
			continue;
		struct timeval tv = {.tv_sec = 2};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	return fd;
}

bool cli_probe_speaks_h2c(const char *endpoint)
{
	int fd = probe_connect(endpoint);
	if (fd < 0)
		return false;
	/* The client preface and an empty SETTINGS frame; an HTTP/2 server
	 * answers with its own SETTINGS frame (type 4) first. */
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	                              "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
	bool yes = false;
	if (send(fd, preface, sizeof(preface) - 1, MSG_NOSIGNAL) ==
	    (ssize_t)(sizeof(preface) - 1)) {
		unsigned char frame[9];
		size_t got = 0;
		while (got < sizeof(frame)) {
			ssize_t r =
			    recv(fd, frame + got, sizeof(frame) - got, 0);
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		yes = got == sizeof(frame) && frame[3] == 0x04;
	}
	close(fd);
	return yes;
}

bool cli_probe_speaks_tls(const char *endpoint)
{
	int fd = probe_connect(endpoint);
	if (fd < 0)
		return false;
	bool yes = false;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;
	if (ssl) {
		/* Only the protocol matters here: the certificate is the real
		 * connection's business. */
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
		SSL_set_fd(ssl, fd);
		yes = SSL_connect(ssl) == 1;
		SSL_free(ssl);
	}
	SSL_CTX_free(ctx);
	close(fd);
	return yes;
}
