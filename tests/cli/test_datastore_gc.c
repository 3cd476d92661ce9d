/*
 * test_datastore_gc.c -- `pemba datastore gc`: removes history older than
 * the window, after which reads at old revisions fail cleanly while the
 * head stays readable; refuses bad windows and missing datastores.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pemba.h"

static char dir[256], uri[512], cmd[2048], out_path[512];

static int run_pemba(const char *args)
{
	snprintf(cmd, sizeof(cmd), "%s %s >%s 2>&1 </dev/null", PEMBA_BINARY,
	         args, out_path);
	int status = system(cmd);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *output(void)
{
	static char buf[8192];
	FILE *f = fopen(out_path, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int setup(void **state)
{
	strcpy(dir, "/tmp/pemba-gc-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(uri, sizeof(uri), "sqlite://%s/gc.db", dir);
	snprintf(out_path, sizeof(out_path), "%s/out.txt", dir);
	return 0;
}

static int teardown(void **state)
{
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static void test_gc_removes_old_versions_and_old_reads_fail(void **state)
{
	pemba_db *db;
	pemba_error err;
	assert_int_equal(pemba_open(uri, NULL, &db, &err), 0);
	const char *schema = "definition user {}\n"
	                     "definition doc {\n"
	                     "  relation viewer: user\n"
	                     "}\n";
	assert_int_equal(
	    pemba_write_schema(db, schema, strlen(schema), NULL, &err), 0);
	pemba_update u = {.op = PEMBA_OP_TOUCH,
	                  .rel = {.resource_type = "doc",
	                          .resource_id = "1",
	                          .relation = "viewer",
	                          .subject_type = "user",
	                          .subject_id = "anne"}};
	pemba_revision created, deleted;
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, NULL, 0, &created, &err), 0);
	u.op = PEMBA_OP_DELETE;
	assert_int_equal(
	    pemba_write_relationships(db, &u, 1, NULL, 0, &deleted, &err), 0);
	pemba_close(db);

	sleep(2); /* everything above is now older than a 1 s window */
	char args[700];
	snprintf(args, sizeof(args), "datastore gc --datastore %s --window 1s",
	         uri);
	assert_int_equal(run_pemba(args), 0);
	assert_non_null(strstr(output(), "removed "));
	assert_null(strstr(output(), "removed 0 "));

	assert_int_equal(pemba_open(uri, NULL, &db, &err), 0);
	pemba_check_request q = {.resource_type = "doc",
	                         .resource_id = "1",
	                         .permission = "viewer",
	                         .subject_type = "user",
	                         .subject_id = "anne"};
	pemba_permissionship p;
	assert_int_equal(pemba_check_permission(db, created, &q, &p, &err),
	                 PEMBA_EREVISION);
	assert_non_null(strstr(err.message, "garbage-collected"));
	assert_int_equal(pemba_check_permission(db, 0, &q, &p, &err), 0);
	assert_int_equal(p, PEMBA_NO_PERMISSION);
	pemba_close(db);
}

static void test_gc_refuses_bad_window_and_missing_datastore(void **state)
{
	char args[700];
	snprintf(args, sizeof(args), "datastore gc --datastore %s --window 5x",
	         uri);
	assert_int_equal(run_pemba(args), 2);
	assert_non_null(strstr(output(), "bad --window"));
	snprintf(args, sizeof(args),
	         "datastore gc --datastore sqlite://%s/missing.db", dir);
	assert_int_equal(run_pemba(args), 1);
	assert_non_null(strstr(output(), "missing.db"));
	assert_int_equal(run_pemba("datastore gc --help"), 0);
	assert_non_null(strstr(output(), "usage: pemba datastore gc"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
		test_gc_removes_old_versions_and_old_reads_fail, setup,
		teardown),
	    cmocka_unit_test_setup_teardown(
		test_gc_refuses_bad_window_and_missing_datastore, setup,
		teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
