/*
 * file_lease.c -- shared and exclusive leases on a datastore file, with a
 * record of each holder (design in file_lease.h and README.md).
 */
#define _GNU_SOURCE /* F_OFD_SETLK, F_OFD_GETLK */
#include "store/file_lease.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/error.h"
#include "util/xalloc.h"

#ifndef F_OFD_SETLK
#error "file_lease.c needs open file description locks (Linux 3.15+)"
#endif

#define GATE_OFFSET 0
#define RECORD_MAGIC "pemba-lease-v1"

struct file_lease {
	int fd;
};

/* ============================================================== locks */

/* Tries a lock of `type` (F_RDLCK, F_WRLCK) on [start, start + len)
 * without waiting: 0, or -1 with errno (EAGAIN/EACCES: held by someone
 * else). */
static int try_lock(int fd, short type, off_t start, off_t len)
{
	struct flock fl;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = start;
	fl.l_len = len;
	return fcntl(fd, F_OFD_SETLK, &fl);
}

/* Whether someone else holds a write lock on [start, start + len) (the
 * kind a record slot's owner holds).  Asking with a read lock works on a
 * descriptor opened read-only too. */
static bool is_locked(int fd, off_t start, off_t len)
{
	struct flock fl;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_RDLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = start;
	fl.l_len = len;
	if (fcntl(fd, F_OFD_GETLK, &fl) != 0)
		return false;
	return fl.l_type != F_UNLCK;
}

static off_t slot_offset(int i)
{
	return FILE_LEASE_SLOT_BASE + (off_t)i * FILE_LEASE_SLOT_BYTES;
}

static int open_lock_file(const char *path, const char *what, int *fd_out,
                          pemba_error *err)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return error_set(err, PEMBA_EIO,
		                 "cannot open the lock file %s of datastore "
		                 "%s: %s",
		                 path, what, strerror(errno));
	*fd_out = fd;
	return PEMBA_OK;
}

/* ============================================================ records */

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes this process's record for `role` into slot i (which the caller
 * has locked).  Best effort: a record is information, not the lock. */
static void write_record(int fd, int i, const char *role)
{
	char host[64] = "";
	if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = '\0';
	for (char *p = host; *p; p++)
		if (*p == ' ' || *p == '\n')
			*p = '_';
	char rec[FILE_LEASE_SLOT_BYTES];
	memset(rec, 0, sizeof(rec));
	snprintf(rec, sizeof(rec),
	         RECORD_MAGIC " role=%.15s pid=%ld host=%s started_ms=%" PRId64
	                      "\n",
	         role, (long)getpid(), host, wall_ms());
	if (pwrite(fd, rec, sizeof(rec), slot_offset(i)) < 0) {
		/* nothing to do: the lease holds without its record */
	}
}

/* Parses slot i into *u; false if it holds no record. */
static bool read_record(int fd, int i, store_user *u)
{
	char rec[FILE_LEASE_SLOT_BYTES + 1];
	ssize_t n = pread(fd, rec, FILE_LEASE_SLOT_BYTES, slot_offset(i));
	if (n <= 0)
		return false;
	rec[n] = '\0';
	memset(u, 0, sizeof(*u));
	char role[16], host[64];
	long pid;
	long long started;
	if (sscanf(rec,
	           RECORD_MAGIC " role=%15s pid=%ld host=%63s started_ms=%lld",
	           role, &pid, host, &started) != 4)
		return false;
	snprintf(u->role, sizeof(u->role), "%s", role);
	snprintf(u->host, sizeof(u->host), "%s", host);
	u->pid = pid;
	u->started_ms = started;
	return true;
}

void file_lease_describe(const store_user *u, char *buf, size_t n)
{
	time_t t = (time_t)(u->started_ms / 1000);
	struct tm tm;
	char when[32] = "?";
	if (gmtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(buf, n, "pemba %s (pid %ld on host %s, since %s)", u->role,
	         u->pid, u->host, when);
}

/* Lists the live records readable through fd. */
static void list_fd(int fd, store_user *out, size_t cap, size_t *n_out)
{
	size_t n = 0;
	for (int i = 0; i < FILE_LEASE_SLOTS; i++) {
		if (!is_locked(fd, slot_offset(i), FILE_LEASE_SLOT_BYTES))
			continue;
		store_user u;
		if (!read_record(fd, i, &u))
			continue;
		if (n < cap)
			out[n] = u;
		n++;
	}
	*n_out = n;
}

/* The message for a refused lease: who holds it. */
static int refusal(int fd, const char *what, bool exclusive, pemba_error *err)
{
	store_user users[4];
	size_t n = 0;
	list_fd(fd, users, 4, &n);
	char first[256] = "another pemba process";
	/* A refused shared lease is about the exclusive holder: name it
	 * rather than a fellow server. */
	size_t pick = 0;
	if (!exclusive)
		for (size_t i = 0; i < n && i < 4; i++)
			if (strcmp(users[i].role, "serve") != 0) {
				pick = i;
				break;
			}
	if (n > 0)
		file_lease_describe(&users[pick], first, sizeof(first));
	if (exclusive)
		return error_set(err, PEMBA_EPRECONDITION,
		                 "datastore %s is in use by %s%s", what, first,
		                 n > 1 ? " and others" : "");
	return error_set(err, PEMBA_EPRECONDITION,
	                 "datastore %s is locked by %s; try again when it "
	                 "is done",
	                 what, first);
}

/* ============================================================== leases */

int file_lease_take(const char *path, const char *what, const char *role,
                    bool exclusive, file_lease **out, pemba_error *err)
{
	*out = NULL;
	int fd, rc = open_lock_file(path, what, &fd, err);
	if (rc)
		return rc;
	if (try_lock(fd, exclusive ? F_WRLCK : F_RDLCK, GATE_OFFSET, 1) != 0) {
		if (errno == EAGAIN || errno == EACCES)
			rc = refusal(fd, what, exclusive, err);
		else
			rc = error_set(err, PEMBA_EIO,
			               "cannot lock %s (datastore %s): %s",
			               path, what, strerror(errno));
		close(fd);
		return rc;
	}
	for (int i = 0; i < FILE_LEASE_SLOTS; i++)
		if (try_lock(fd, F_WRLCK, slot_offset(i),
		             FILE_LEASE_SLOT_BYTES) == 0) {
			write_record(fd, i, role);
			break;
		}
	file_lease *l = xcalloc(1, sizeof(*l));
	l->fd = fd;
	*out = l;
	return PEMBA_OK;
}

void file_lease_release(file_lease *l)
{
	if (!l)
		return;
	close(l->fd); /* drops every lock of this description */
	free(l);
}

int file_lease_list(const char *path, const file_lease *self, store_user *out,
                    size_t cap, size_t *n_out, pemba_error *err)
{
	*n_out = 0;
	if (self) {
		/* Its own locks never conflict with it: self is left out. */
		list_fd(self->fd, out, cap, n_out);
		return PEMBA_OK;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return PEMBA_OK;
		return error_set(err, PEMBA_EIO, "cannot open %s: %s", path,
		                 strerror(errno));
	}
	list_fd(fd, out, cap, n_out);
	close(fd);
	return PEMBA_OK;
}
