/*
 * test_store_leases.c -- who uses a datastore: servers attach (shared
 * lease), migrations lock (exclusive lease); refusals name the holder
 * (pid, host); a lease ends with its handle and with its process, however
 * that dies (kill -9); memory datastores have none.
 */
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store_fixture.h"

static char *file_uri(const char *dir, const char *name)
{
	char *uri = malloc(strlen(dir) + strlen(name) + 16);
	sprintf(uri, "sqlite://%s/%s", dir, name);
	return uri;
}

static size_t users(store *s, store_user *out, size_t cap)
{
	size_t n = 9999;
	pemba_error err = {0};
	assert_int_equal(store_list_users(s, out, cap, &n, &err), 0);
	return n;
}

static void exclusive_is_refused_while_a_server_is_attached(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "l.db");
	store *server = fixture_open(uri);
	store *migrate = fixture_open(uri);
	pemba_error err = {0};
	assert_int_equal(store_attach(server, "serve", &err), 0);

	/* Refused, naming the server: role, pid, host. */
	assert_int_equal(store_lock_exclusive(migrate, "migrate", &err),
	                 PEMBA_EPRECONDITION);
	char want[128], host[64] = "";
	gethostname(host, sizeof(host) - 1);
	snprintf(want, sizeof(want),
	         "in use by pemba serve (pid %ld on host %s", (long)getpid(),
	         host);
	if (!strstr(err.message, want))
		fail_msg("refusal lacks \"%s\": %s", want, err.message);
	assert_non_null(strstr(err.message, fixture_uri(uri)));

	/* Others see the server; it does not list itself. */
	store_user u[4];
	assert_int_equal(users(migrate, u, 4), 1);
	assert_string_equal(u[0].role, "serve");
	assert_int_equal(u[0].pid, (long)getpid());
	assert_string_equal(u[0].host, host);
	assert_true(u[0].started_ms > 0);
	assert_int_equal(users(server, u, 4), 0);

	/* A second server is fine; both are listed. */
	store *server2 = fixture_open(uri);
	assert_int_equal(store_attach(server2, "serve", &err), 0);
	assert_int_equal(users(migrate, u, 4), 2);

	/* Once both are gone, the migration gets its lock; a server
	 * starting meanwhile is refused, naming the migration. */
	store_close(server);
	assert_int_equal(store_lock_exclusive(migrate, "migrate", &err),
	                 PEMBA_EPRECONDITION);
	store_close(server2);
	assert_int_equal(users(migrate, u, 4), 0);
	assert_int_equal(store_lock_exclusive(migrate, "migrate", &err), 0);
	store *late = fixture_open(uri);
	assert_int_equal(store_attach(late, "serve", &err),
	                 PEMBA_EPRECONDITION);
	assert_non_null(strstr(err.message, "locked by pemba migrate"));
	assert_int_equal(store_lock_exclusive(late, "migrate", &err),
	                 PEMBA_EPRECONDITION);
	store_close(migrate);
	assert_int_equal(store_attach(late, "serve", &err), 0);
	/* One lease per handle. */
	assert_int_equal(store_attach(late, "serve", &err), PEMBA_EINVAL);
	store_close(late);
	free(uri);
	fixture_rmdir(dir);
}

/* A child process attaches and is killed with SIGKILL: its lease is gone
 * with it, so the exclusive lock succeeds at once. */
static void a_killed_server_does_not_block(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "k.db");
	store *s = fixture_open(uri);
	int ready[2];
	assert_int_equal(pipe(ready), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		store *c = NULL;
		pemba_error e = {0};
		if (store_open(fixture_uri(uri), NULL, &c, &e) != 0 ||
		    store_attach(c, "serve", &e) != 0)
			_exit(1);
		if (write(ready[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	char x;
	assert_int_equal(read(ready[0], &x, 1), 1);
	pemba_error err = {0};
	assert_int_equal(store_lock_exclusive(s, "migrate", &err),
	                 PEMBA_EPRECONDITION);
	char want[64];
	snprintf(want, sizeof(want), "pid %ld", (long)child);
	assert_non_null(strstr(err.message, want));
	kill(child, SIGKILL);
	int st;
	assert_int_equal(waitpid(child, &st, 0), child);
	/* Its record is still in the file, but nobody holds its lock.
	 * (PostgreSQL ends the killed client's session when it sees the
	 * socket close: give it a moment.) */
	store_user u[4];
	for (int i = 0; i < 200 && pg_fixture_enabled() && users(s, u, 4); i++)
		usleep(10 * 1000);
	assert_int_equal(users(s, u, 4), 0);
	assert_int_equal(store_lock_exclusive(s, "migrate", &err), 0);
	close(ready[0]);
	close(ready[1]);
	store_close(s);
	free(uri);
	fixture_rmdir(dir);
}

static void slots_are_reused_and_records_replaced(void **state)
{
	char *dir = fixture_tmpdir();
	char *uri = file_uri(dir, "r.db");
	store *probe = fixture_open(uri);
	pemba_error err = {0};
	/* More servers than the list asks for: the count is still right. */
	store *h[5];
	for (int i = 0; i < 5; i++) {
		h[i] = fixture_open(uri);
		assert_int_equal(store_attach(h[i], "serve", &err), 0);
	}
	store_user u[2];
	assert_int_equal(users(probe, u, 2), 5);
	for (int round = 0; round < 3; round++) {
		store_close(h[1]);
		assert_int_equal(users(probe, u, 2), 4);
		h[1] = fixture_open(uri);
		assert_int_equal(store_attach(h[1], "serve", &err), 0);
		assert_int_equal(users(probe, u, 2), 5);
	}
	for (int i = 0; i < 5; i++)
		store_close(h[i]);
	assert_int_equal(users(probe, u, 2), 0);
	store_close(probe);
	free(uri);
	fixture_rmdir(dir);
}

static void memory_datastores_have_no_leases(void **state)
{
	FIXTURE_SQLITE_ONLY("memory datastores");
	store *a = fixture_open("sqlite::memory:lease-test");
	store *b = fixture_open("sqlite::memory:lease-test");
	pemba_error err = {0};
	assert_int_equal(store_attach(a, "serve", &err), 0);
	assert_int_equal(store_lock_exclusive(b, "migrate", &err), 0);
	store_user u[2];
	assert_int_equal(users(b, u, 2), 0);
	store_close(a);
	store_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(exclusive_is_refused_while_a_server_is_attached),
	    cmocka_unit_test(a_killed_server_does_not_block),
	    cmocka_unit_test(slots_are_reused_and_records_replaced),
	    cmocka_unit_test(memory_datastores_have_no_leases),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
