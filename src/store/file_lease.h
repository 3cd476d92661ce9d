/*
 * file_lease.h -- which processes use a datastore file, through a sidecar
 * lock file (private to src/store; README.md, "Processes using a
 * datastore").
 *
 * Every long-running process serving a datastore (`pemba serve`) holds a
 * *shared* lease on it; an operation that must not run under a server
 * (`pemba datastore migrate`, `new-identity`) takes the *exclusive* lease,
 * which fails while any shared one is held, and a shared lease cannot be
 * taken while the exclusive one is.  Each holder also leaves a small
 * record (role, pid, host, start time) so a refusal can say who is in the
 * way.
 *
 * The leases are open-file-description locks (Linux F_OFD_SETLK) on
 * `<datastore file>-pemba-lock`: the kernel drops them when the holder's
 * file descriptor is closed, which includes the process dying in any way
 * (kill -9, crash, power loss).  So a dead server never blocks a
 * migration, and a record whose lock is not held is known to be stale and
 * is ignored.  Unlike POSIX record locks they conflict between two opens
 * in one process too (a server thread and a migration in the same test
 * process), and unlike flock() they cover byte ranges, which gives every
 * holder its own record slot.
 *
 * File layout: byte 0 is the gate (shared: read lock; exclusive: write
 * lock); FILE_LEASE_SLOTS record slots of FILE_LEASE_SLOT_BYTES follow at
 * FILE_LEASE_SLOT_BASE, each write-locked by the holder whose record it
 * holds.  A holder that finds no free slot still holds its gate lock (it
 * is counted, but anonymous).
 */
#ifndef PEMBA_FILE_LEASE_H
#define PEMBA_FILE_LEASE_H

#include <stdbool.h>
#include <stddef.h>

#include "store/store.h"

#define FILE_LEASE_SUFFIX "-pemba-lock"
#define FILE_LEASE_SLOT_BASE 512
#define FILE_LEASE_SLOT_BYTES 256
#define FILE_LEASE_SLOTS 64

typedef struct file_lease file_lease;

/*
 * Takes a lease on lock file `path` (created if missing) for `role`
 * ("serve", "migrate", ...; at most 15 bytes).  `what` names the
 * datastore in messages.  Shared: PEMBA_EPRECONDITION while an exclusive
 * lease is held, naming its holder.  Exclusive: PEMBA_EPRECONDITION while
 * any lease is held, naming the holders.  PEMBA_EIO if the lock file
 * cannot be opened.  *out is released with file_lease_release.
 */
int file_lease_take(const char *path, const char *what, const char *role,
                    bool exclusive, file_lease **out, pemba_error *err);
void file_lease_release(file_lease *l);

/* The live holders of leases on lock file `path` (records whose slot lock
 * is held), except `self` (may be NULL): up to cap of them in out[],
 * *n_out the number found (may exceed cap).  A missing lock file means
 * nobody: 0. */
int file_lease_list(const char *path, const file_lease *self, store_user *out,
                    size_t cap, size_t *n_out, pemba_error *err);

/* Writes "role (pid P on host H, since TIME)" to buf. */
void file_lease_describe(const store_user *u, char *buf, size_t n);

#endif
