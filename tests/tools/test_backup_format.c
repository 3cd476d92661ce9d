/*
 * test_backup_format.c -- src/tools/backup_format.c: pemba's writer and
 * reader against each other and against an independent Avro
 * implementation (Apache Avro's C library, libavro): files pemba writes
 * are read by libavro record for record; files libavro writes in zed's
 * layout (snappy, and zed's older schema without `expiration`) are read by
 * pemba; every truncation of a file is refused or, only at a block
 * boundary, reads as a shorter file; a flipped byte in a block is refused.
 */
#define _GNU_SOURCE /* memmem, fmemopen, open_memstream */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <avro.h>
#include <cmocka.h>

#include "tools/backup_format.h"

static const char schema_text[] = "definition user {}\n"
                                  "definition doc {\n"
                                  "\trelation viewer: user\n"
                                  "}\n";

/* The i-th test relationship; every third has a caveat with a context of
 * i % 7 bytes, every fifth an expiration, every fourth a subject
 * relation. */
static void make_rel(int i, backup_relationship *r, char id[32],
                     uint8_t context[8])
{
	snprintf(id, 32, "d%06d", i);
	for (int k = 0; k < 8; k++)
		context[k] = (uint8_t)(i + k);
	*r = (backup_relationship){
	    .object_type = "doc",
	    .object_id = id,
	    .relation = "viewer",
	    .subject_object_type = "user",
	    .subject_object_id = i % 2 ? "anne" : "b\xc3\xa9",
	    .subject_relation = i % 4 == 0 ? "member" : "",
	    .caveat_name = i % 3 == 0 ? "has_level" : "",
	    .caveat_context = i % 3 == 0 ? context : NULL,
	    .caveat_context_len = i % 3 == 0 ? (size_t)(i % 7) : 0,
	    .expiration_ms =
	        i % 5 == 0 ? INT64_C(4071006245000) + i : BACKUP_NO_EXPIRATION,
	};
}

/* Writes a backup of n relationships into a heap buffer. */
static char *write_backup(int n, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);
	char error[BACKUP_ERROR_LEN];
	backup_writer *w = backup_writer_create(f, "GgYIARCBAg==", error);
	assert_non_null(w);
	assert_int_equal(backup_writer_schema(w, schema_text), 0);
	for (int i = 0; i < n; i++) {
		backup_relationship r;
		char id[32];
		uint8_t ctx[8];
		make_rel(i, &r, id, ctx);
		assert_int_equal(backup_writer_relationship(w, &r), 0);
	}
	assert_int_equal(backup_writer_finish(w), 0);
	assert_int_equal(backup_writer_offset(w), ftell(f));
	backup_writer_free(w);
	fclose(f);
	return buf;
}

/* Reads a backup from memory; returns the number of relationships, or -1
 * (error text in error). */
static int read_backup(const char *buf, size_t len, bool check,
                       char error[BACKUP_ERROR_LEN])
{
	FILE *f = fmemopen((void *)buf, len, "rb");
	backup_reader *r = backup_reader_open(f, error);
	if (!r) {
		fclose(f);
		return -1;
	}
	if (check) {
		assert_string_equal(backup_reader_schema(r), schema_text);
		assert_string_equal(backup_reader_zedtoken(r), "GgYIARCBAg==");
	}
	backup_relationship got;
	int n = 0, rc;
	while ((rc = backup_reader_next(r, &got)) == 1) {
		if (check) {
			backup_relationship want;
			char id[32];
			uint8_t ctx[8];
			make_rel(n, &want, id, ctx);
			assert_string_equal(got.object_id, want.object_id);
			assert_string_equal(got.subject_object_id,
			                    want.subject_object_id);
			assert_string_equal(got.subject_relation,
			                    want.subject_relation);
			assert_string_equal(got.caveat_name, want.caveat_name);
			assert_int_equal(got.caveat_context_len,
			                 want.caveat_context_len);
			if (want.caveat_context_len)
				assert_memory_equal(got.caveat_context, ctx,
				                    want.caveat_context_len);
			assert_int_equal(got.expiration_ms, want.expiration_ms);
		}
		n++;
	}
	if (rc < 0) {
		snprintf(error, BACKUP_ERROR_LEN, "%s", backup_reader_error(r));
		n = -1;
	}
	backup_reader_free(r);
	fclose(f);
	return n;
}

static void round_trip_over_many_blocks(void **state)
{
	(void)state;
	size_t len;
	char *buf = write_backup(30000, &len);
	assert_true(len > 2 * BACKUP_BLOCK_BYTES / 8); /* several blocks */
	char error[BACKUP_ERROR_LEN];
	assert_int_equal(read_backup(buf, len, true, error), 30000);
	free(buf);
}

static void schema_must_come_first(void **state)
{
	(void)state;
	char *buf = NULL;
	size_t len;
	FILE *f = open_memstream(&buf, &len);
	char error[BACKUP_ERROR_LEN];
	backup_writer *w = backup_writer_create(f, "", error);
	backup_relationship r;
	char id[32];
	uint8_t ctx[8];
	make_rel(1, &r, id, ctx);
	assert_int_equal(backup_writer_relationship(w, &r), -1);
	assert_non_null(strstr(backup_writer_error(w), "schema"));
	backup_writer_free(w);
	fclose(f);
	free(buf);
}

/* Every cut is refused with a byte position, except cuts at a block
 * boundary, which read as a file with fewer relationships. */
static void every_truncation_is_refused_or_a_prefix(void **state)
{
	(void)state;
	size_t len;
	char *buf = write_backup(3000, &len);
	int prefixes = 0;
	for (size_t cut = 0; cut < len; cut += (cut < 2000 ? 1 : 97)) {
		char error[BACKUP_ERROR_LEN] = "";
		int n = read_backup(buf, cut, false, error);
		if (n >= 0) {
			assert_true(n < 3000);
			prefixes++;
			continue;
		}
		if (cut > 0 && !strstr(error, "byte ")) {
			fprintf(stderr, "cut %zu: %s\n", cut, error);
			fail();
		}
	}
	assert_true(prefixes < 5);
	free(buf);
}

static void flipped_block_bytes_are_refused(void **state)
{
	(void)state;
	size_t len;
	char *buf = write_backup(50, &len);
	/* The header ends at the first sync marker; flip every byte after
	 * it (the blocks, their headers and sync markers). */
	char error[BACKUP_ERROR_LEN];
	FILE *f = fmemopen(buf, len, "rb");
	backup_reader *r = backup_reader_open(f, error);
	assert_non_null(r);
	const uint8_t *sync = backup_reader_sync(r);
	char *first = memmem(buf, len, sync, 16);
	assert_non_null(first);
	size_t start = (size_t)(first - buf) + 16;
	backup_reader_free(r);
	fclose(f);
	for (size_t i = start; i < len; i++) {
		buf[i] ^= 0x20;
		int n = read_backup(buf, len, false, error);
		if (n != -1) {
			fprintf(stderr, "flip at %zu read %d\n", i, n);
			fail();
		}
		assert_non_null(strstr(error, "byte "));
		buf[i] ^= 0x20;
	}
	free(buf);
}

static void not_a_backup(void **state)
{
	(void)state;
	char error[BACKUP_ERROR_LEN];
	const char text[] = "definition user {}\n";
	assert_int_equal(read_backup(text, sizeof(text) - 1, false, error), -1);
	assert_non_null(strstr(error, "not a zed backup"));
	assert_int_equal(read_backup("", 0, false, error), -1);
}

/* ===================================================================== */
/* libavro                                                               */
/* ===================================================================== */

static void libavro_reads_pemba_files(void **state)
{
	(void)state;
	size_t len;
	char *buf = write_backup(2000, &len);
	char path[] = "/tmp/pemba-backup-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
	avro_file_reader_t fr;
	assert_int_equal(avro_file_reader(path, &fr), 0);
	avro_schema_t ws = avro_file_reader_get_writer_schema(fr);
	avro_value_iface_t *iface = avro_generic_class_from_schema(ws);
	avro_value_t v;
	avro_generic_value_new(iface, &v);
	int n = 0;
	while (avro_file_reader_read_value(fr, &v) == 0) {
		avro_value_t branch, field;
		int disc;
		assert_int_equal(avro_value_get_discriminant(&v, &disc), 0);
		avro_value_get_current_branch(&v, &branch);
		if (n == 0) {
			assert_int_equal(disc, 1); /* schema_v1 */
			const char *s;
			size_t sl;
			avro_value_get_by_name(&branch, "schema_text", &field,
			                       NULL);
			avro_value_get_string(&field, &s, &sl);
			assert_string_equal(s, schema_text);
		} else {
			assert_int_equal(disc, 0);
			backup_relationship want;
			char id[32];
			uint8_t ctx[8];
			make_rel(n - 1, &want, id, ctx);
			const char *s;
			size_t sl;
			avro_value_get_by_name(&branch, "object_id", &field,
			                       NULL);
			avro_value_get_string(&field, &s, &sl);
			assert_string_equal(s, id);
			int64_t exp = 0;
			avro_value_get_by_name(&branch, "expiration", &field,
			                       NULL);
			avro_value_get_long(&field, &exp);
			assert_int_equal(exp, want.expiration_ms);
			const void *b;
			size_t bl = 0;
			avro_value_get_by_name(&branch, "caveat_context",
			                       &field, NULL);
			avro_value_get_bytes(&field, &b, &bl);
			assert_int_equal(bl, want.caveat_context_len);
		}
		n++;
	}
	assert_int_equal(n, 2001);
	avro_value_decref(&v);
	avro_value_iface_decref(iface);
	avro_schema_decref(ws); /* get_writer_schema gives a reference */
	avro_file_reader_close(fr);
	unlink(path);
	free(buf);
}

/* zed's record layout, written by libavro with its snappy codec. */
static const char zed_schema_fmt[] =
    "[{\"type\":\"record\",\"name\":\"relationship_v1\","
    "\"namespace\":\"com.authzed.spicedb.backup\",\"fields\":["
    "{\"name\":\"object_type\",\"type\":\"string\"},"
    "{\"name\":\"object_id\",\"type\":\"string\"},"
    "{\"name\":\"relation\",\"type\":\"string\"},"
    "{\"name\":\"subject_object_type\",\"type\":\"string\"},"
    "{\"name\":\"subject_object_id\",\"type\":\"string\"},"
    "{\"name\":\"subject_relation\",\"type\":\"string\"},"
    "{\"name\":\"caveat_name\",\"type\":\"string\"},"
    "{\"name\":\"caveat_context\",\"type\":\"bytes\"}%s]},"
    "{\"type\":\"record\",\"name\":\"schema_v1\","
    "\"namespace\":\"com.authzed.spicedb.backup\",\"fields\":["
    "{\"name\":\"schema_text\",\"type\":\"string\"}]}]";

static void libavro_file_is_read(bool with_expiration)
{
	char json[4096];
	snprintf(json, sizeof(json), zed_schema_fmt,
	         with_expiration
	             ? ",{\"name\":\"expiration\",\"type\":{\"type\":\"long\","
	               "\"logicalType\":\"timestamp-millis\"}}"
	             : "");
	avro_schema_t schema;
	assert_int_equal(
	    avro_schema_from_json_length(json, strlen(json), &schema), 0);
	char path[] = "/tmp/pemba-backup-XXXXXX";
	int fd = mkstemp(path);
	close(fd);
	unlink(path);
	avro_file_writer_t fw;
	assert_int_equal(
	    avro_file_writer_create_with_codec(path, schema, &fw, "snappy", 0),
	    0);
	avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
	avro_value_t v, branch, field;
	avro_generic_value_new(iface, &v);
	avro_value_set_branch(&v, 1, &branch);
	avro_value_get_by_name(&branch, "schema_text", &field, NULL);
	avro_value_set_string(&field, schema_text);
	assert_int_equal(avro_file_writer_append_value(fw, &v), 0);
	for (int i = 0; i < 500; i++) {
		backup_relationship r;
		char id[32];
		uint8_t ctx[8];
		make_rel(i, &r, id, ctx);
		avro_value_set_branch(&v, 0, &branch);
		const char *names[] = {
		    "object_type",       "object_id",
		    "relation",          "subject_object_type",
		    "subject_object_id", "subject_relation",
		    "caveat_name"};
		const char *vals[] = {
		    r.object_type,       r.object_id,
		    r.relation,          r.subject_object_type,
		    r.subject_object_id, r.subject_relation,
		    r.caveat_name};
		for (int k = 0; k < 7; k++) {
			avro_value_get_by_name(&branch, names[k], &field, NULL);
			avro_value_set_string(&field, vals[k]);
		}
		avro_value_get_by_name(&branch, "caveat_context", &field, NULL);
		avro_value_set_bytes(
		    &field, (void *)(r.caveat_context ? (void *)ctx : ""),
		    r.caveat_context_len);
		if (with_expiration) {
			avro_value_get_by_name(&branch, "expiration", &field,
			                       NULL);
			avro_value_set_long(&field, r.expiration_ms);
		}
		assert_int_equal(avro_file_writer_append_value(fw, &v), 0);
	}
	avro_file_writer_close(fw);
	avro_value_decref(&v);
	avro_value_iface_decref(iface);
	avro_schema_decref(schema);

	FILE *f = fopen(path, "rb");
	char error[BACKUP_ERROR_LEN];
	backup_reader *r = backup_reader_open(f, error);
	if (!r)
		fprintf(stderr, "%s\n", error);
	assert_non_null(r);
	assert_string_equal(backup_reader_schema(r), schema_text);
	assert_string_equal(backup_reader_zedtoken(r), "");
	backup_relationship got;
	int n = 0;
	while (backup_reader_next(r, &got) == 1) {
		backup_relationship want;
		char id[32];
		uint8_t ctx[8];
		make_rel(n, &want, id, ctx);
		assert_string_equal(got.object_id, id);
		assert_string_equal(got.caveat_name, want.caveat_name);
		assert_int_equal(got.caveat_context_len,
		                 want.caveat_context_len);
		assert_int_equal(got.expiration_ms, with_expiration
		                                        ? want.expiration_ms
		                                        : BACKUP_NO_EXPIRATION);
		n++;
	}
	assert_string_equal(backup_reader_error(r), "");
	assert_int_equal(n, 500);
	backup_reader_free(r);
	fclose(f);
	unlink(path);
}

static void pemba_reads_libavro_files(void **state)
{
	(void)state;
	libavro_file_is_read(true);
}

static void pemba_reads_files_without_expiration(void **state)
{
	(void)state;
	libavro_file_is_read(false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(round_trip_over_many_blocks),
	    cmocka_unit_test(schema_must_come_first),
	    cmocka_unit_test(every_truncation_is_refused_or_a_prefix),
	    cmocka_unit_test(flipped_block_bytes_are_refused),
	    cmocka_unit_test(not_a_backup),
	    cmocka_unit_test(libavro_reads_pemba_files),
	    cmocka_unit_test(pemba_reads_libavro_files),
	    cmocka_unit_test(pemba_reads_files_without_expiration),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
