/*
 * backup_format.c -- zed's backup file (Avro object container, snappy):
 * writer and reader.  See backup_format.h for the layout and README.md
 * ("backup_format.c") for why the container is written here rather than
 * with libavro.
 *
 * Avro binary encoding used here: long = zig-zag varint (at most 10
 * bytes); string and bytes = long length + the bytes; union = long branch
 * index + the branch's value; record = its fields in order.  Container:
 * "Obj\x01", the metadata map (blocks of count + key/value pairs, ending
 * with count 0; a negative count is followed by the block's byte size),
 * the 16-byte sync marker, then blocks: long record count, long byte size,
 * the (compressed) records, the sync marker.  Snappy blocks are the
 * snappy-compressed records followed by the big-endian CRC32 of the
 * uncompressed records.
 */
#include "tools/backup_format.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <snappy-c.h>
#include <zlib.h>

#include "util/strbuf.h"
#include "util/xalloc.h"

static const char avro_magic[4] = {'O', 'b', 'j', 1};

/* The writer schema, as zed (hamba/avro) serialises it. */
static const char writer_schema[] =
    "[{\"name\":\"com.authzed.spicedb.backup.relationship_v1\","
    "\"type\":\"record\",\"fields\":["
    "{\"name\":\"object_type\",\"type\":\"string\"},"
    "{\"name\":\"object_id\",\"type\":\"string\"},"
    "{\"name\":\"relation\",\"type\":\"string\"},"
    "{\"name\":\"subject_object_type\",\"type\":\"string\"},"
    "{\"name\":\"subject_object_id\",\"type\":\"string\"},"
    "{\"name\":\"subject_relation\",\"type\":\"string\"},"
    "{\"name\":\"caveat_name\",\"type\":\"string\"},"
    "{\"name\":\"caveat_context\",\"type\":\"bytes\"},"
    "{\"name\":\"expiration\",\"type\":{\"type\":\"long\","
    "\"logicalType\":\"timestamp-millis\"}}]},"
    "{\"name\":\"com.authzed.spicedb.backup.schema_v1\","
    "\"type\":\"record\",\"fields\":["
    "{\"name\":\"schema_text\",\"type\":\"string\"}]}]";

/* relationship_v1's fields in order; the last (expiration) may be absent
 * in files of zed versions before expirations. */
static const char *const relationship_fields[] = {
    "object_type",         "object_id",         "relation",
    "subject_object_type", "subject_object_id", "subject_relation",
    "caveat_name",         "caveat_context",    "expiration",
};
#define NREL_FIELDS 9

/* ===================================================================== */
/* CRC32 (IEEE 802.3, as java.util.zip.CRC32 and the Avro spec)          */
/* ===================================================================== */

/* zlib's crc32 is this CRC (and fast: the bytewise loop this replaced was
 * ~14% of `backup create`'s CPU, perf, 300k relationships).  It takes an
 * unsigned int length: feed larger buffers in pieces. */
static uint32_t crc32_ieee(const uint8_t *p, size_t n)
{
	uLong c = crc32(0L, Z_NULL, 0);
	while (n > 0) {
		uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
		c = crc32(c, p, k);
		p += k;
		n -= k;
	}
	return (uint32_t)c;
}

/* ===================================================================== */
/* Encoding                                                              */
/* ===================================================================== */

static void put_long(strbuf *b, int64_t v)
{
	uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
	char tmp[10];
	size_t n = 0;
	while (z >= 0x80) {
		tmp[n++] = (char)((z & 0x7F) | 0x80);
		z >>= 7;
	}
	tmp[n++] = (char)z;
	strbuf_append(b, tmp, n);
}

static void put_bytes(strbuf *b, const void *p, size_t n)
{
	put_long(b, (int64_t)n);
	if (n)
		strbuf_append(b, p, n);
}

static void put_string(strbuf *b, const char *s)
{
	put_bytes(b, s ? s : "", s ? strlen(s) : 0);
}

/* ===================================================================== */
/* Writer                                                                */
/* ===================================================================== */

struct backup_writer {
	FILE *out;
	uint8_t sync[16];
	uint64_t offset;  /* bytes written */
	strbuf block;     /* records of the current block */
	int64_t nrecords; /* in block */
	bool any_record;  /* a record was ever appended */
	char error[BACKUP_ERROR_LEN];
};

static int writer_fail(backup_writer *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int writer_fail(backup_writer *w, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->error, sizeof(w->error), fmt, ap);
	va_end(ap);
	return -1;
}

static int writer_put(backup_writer *w, const void *p, size_t n)
{
	if (n && fwrite(p, 1, n, w->out) != n)
		return writer_fail(
		    w, "cannot write the backup at byte %" PRIu64 ": %s",
		    w->offset, strerror(errno));
	w->offset += n;
	return 0;
}

static void random_sync(uint8_t sync[16])
{
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, sync, 16);
		close(fd);
		if (n == 16)
			return;
	}
	/* No /dev/urandom: any marker works, it only has to be unlikely in
	 * the data. */
	uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	for (int i = 0; i < 16; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		sync[i] = (uint8_t)(x >> 56);
	}
}

backup_writer *backup_writer_create(FILE *out, const char *zedtoken,
                                    char error[BACKUP_ERROR_LEN])
{
	backup_writer *w = xcalloc(1, sizeof(*w));
	w->out = out;
	strbuf_init(&w->block);
	random_sync(w->sync);

	strbuf h;
	strbuf_init(&h);
	strbuf_append(&h, avro_magic, 4);
	bool token = zedtoken && *zedtoken;
	put_long(&h, token ? 3 : 2);
	put_string(&h, "avro.schema");
	put_string(&h, writer_schema);
	put_string(&h, "avro.codec");
	put_string(&h, "snappy");
	if (token) {
		put_string(&h, BACKUP_ZEDTOKEN_KEY);
		put_string(&h, zedtoken);
	}
	put_long(&h, 0);
	strbuf_append(&h, (const char *)w->sync, 16);
	int rc = writer_put(w, h.data, h.len);
	strbuf_free(&h);
	if (rc != 0 || fflush(out) != 0) {
		snprintf(error, BACKUP_ERROR_LEN, "%s",
		         rc ? w->error : "cannot write the backup header");
		backup_writer_free(w);
		return NULL;
	}
	return w;
}

backup_writer *backup_writer_continue(FILE *out, const uint8_t sync[16],
                                      uint64_t offset)
{
	backup_writer *w = xcalloc(1, sizeof(*w));
	w->out = out;
	strbuf_init(&w->block);
	memcpy(w->sync, sync, 16);
	w->offset = offset;
	w->any_record = true; /* the schema is in the file */
	return w;
}

/* Writes one block of nrecords records (data) with the snappy codec. */
static int write_block(backup_writer *w, int64_t nrecords, const char *data,
                       size_t len)
{
	size_t max = snappy_max_compressed_length(len);
	char *z = xmalloc(max + 4);
	size_t zlen = max;
	if (snappy_compress(data, len, z, &zlen) != SNAPPY_OK) {
		free(z);
		return writer_fail(w, "snappy could not compress a block");
	}
	uint32_t crc = crc32_ieee((const uint8_t *)data, len);
	z[zlen++] = (char)(crc >> 24);
	z[zlen++] = (char)(crc >> 16);
	z[zlen++] = (char)(crc >> 8);
	z[zlen++] = (char)crc;

	strbuf h;
	strbuf_init(&h);
	put_long(&h, nrecords);
	put_long(&h, (int64_t)zlen);
	int rc = writer_put(w, h.data, h.len);
	strbuf_free(&h);
	if (rc == 0)
		rc = writer_put(w, z, zlen);
	if (rc == 0)
		rc = writer_put(w, w->sync, 16);
	free(z);
	return rc;
}

int backup_writer_flush(backup_writer *w)
{
	if (w->nrecords > 0) {
		if (write_block(w, w->nrecords, w->block.data, w->block.len) !=
		    0)
			return -1;
		strbuf_reset(&w->block);
		w->nrecords = 0;
	}
	if (fflush(w->out) != 0)
		return writer_fail(w, "cannot write the backup: %s",
		                   strerror(errno));
	return 0;
}

static int record_added(backup_writer *w)
{
	w->nrecords++;
	w->any_record = true;
	if (w->block.len >= BACKUP_BLOCK_BYTES)
		return backup_writer_flush(w);
	return 0;
}

int backup_writer_schema(backup_writer *w, const char *schema_text)
{
	if (w->any_record)
		return writer_fail(w, "the schema must be the first record");
	put_long(&w->block, 1); /* union branch: schema_v1 */
	put_string(&w->block, schema_text);
	return record_added(w);
}

int backup_writer_relationship(backup_writer *w, const backup_relationship *rel)
{
	if (!w->any_record)
		return writer_fail(w, "the schema must be written first");
	put_long(&w->block, 0); /* union branch: relationship_v1 */
	put_string(&w->block, rel->object_type);
	put_string(&w->block, rel->object_id);
	put_string(&w->block, rel->relation);
	put_string(&w->block, rel->subject_object_type);
	put_string(&w->block, rel->subject_object_id);
	put_string(&w->block, rel->subject_relation);
	put_string(&w->block, rel->caveat_name);
	put_bytes(&w->block, rel->caveat_context, rel->caveat_context_len);
	put_long(&w->block, rel->expiration_ms);
	return record_added(w);
}

uint64_t backup_writer_offset(const backup_writer *w)
{
	return w->offset;
}

int backup_writer_finish(backup_writer *w)
{
	return backup_writer_flush(w);
}

const char *backup_writer_error(const backup_writer *w)
{
	return w->error;
}

void backup_writer_free(backup_writer *w)
{
	if (!w)
		return;
	strbuf_free(&w->block);
	free(w);
}

/* ===================================================================== */
/* Reader                                                                */
/* ===================================================================== */

struct backup_reader {
	FILE *in;
	uint64_t pos; /* bytes consumed from in */
	uint8_t sync[16];
	bool snappy;
	int rel_branch;    /* union index of relationship_v1 */
	int nrel_fields;   /* 8 or 9 */
	char *zedtoken;    /* heap, "" when absent */
	char *schema_text; /* heap */
	uint64_t done_off; /* offset past the last finished block */
	/* current block */
	uint64_t block_start;
	char *data; /* uncompressed records */
	size_t data_len, data_pos;
	int64_t remaining; /* records left in the block */
	bool at_end;
	/* strings of the last relationship (pointers into strs) */
	char *strs;
	size_t strs_cap;
	char error[BACKUP_ERROR_LEN];
};

static int reader_fail(backup_reader *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int reader_fail(backup_reader *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
	return -1;
}

/* Reads exactly n bytes; `what` names them for the truncation message. */
static int file_read(backup_reader *r, void *p, size_t n, const char *what)
{
	size_t got = n ? fread(p, 1, n, r->in) : 0;
	if (got != n) {
		if (ferror(r->in))
			return reader_fail(r,
			                   "cannot read the backup at byte "
			                   "%" PRIu64 ": %s",
			                   r->pos + got, strerror(errno));
		return reader_fail(
		    r, "truncated: the file ends at byte %" PRIu64 " inside %s",
		    r->pos + got, what);
	}
	r->pos += n;
	return 0;
}

/* Reads a long from the file.  *eof (when not NULL) is set instead of an
 * error when the file ends before its first byte. */
static int file_long(backup_reader *r, int64_t *v, const char *what, bool *eof)
{
	uint64_t z = 0;
	uint64_t start = r->pos;
	for (int shift = 0; shift < 70; shift += 7) {
		int c = fgetc(r->in);
		if (c == EOF) {
			if (ferror(r->in))
				return reader_fail(r,
				                   "cannot read the backup: %s",
				                   strerror(errno));
			if (eof && r->pos == start) {
				*eof = true;
				return 0;
			}
			return reader_fail(r,
			                   "truncated: the file ends at byte "
			                   "%" PRIu64 " inside %s",
			                   r->pos, what);
		}
		r->pos++;
		z |= (uint64_t)(c & 0x7F) << shift;
		if (!(c & 0x80)) {
			*v = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
			return 0;
		}
	}
	return reader_fail(
	    r, "corrupt: %s at byte %" PRIu64 " is not a valid Avro long", what,
	    start);
}

/* Reads a string or bytes value of at most max bytes into a heap buffer
 * (NUL-terminated). */
static int file_bytes(backup_reader *r, char **out, size_t *len, size_t max,
                      const char *what)
{
	uint64_t start = r->pos;
	int64_t n;
	if (file_long(r, &n, what, NULL) != 0)
		return -1;
	if (n < 0 || (uint64_t)n > max)
		return reader_fail(r,
		                   "corrupt: %s at byte %" PRIu64
		                   " has an impossible length %" PRId64,
		                   what, start, n);
	char *p = xmalloc((size_t)n + 1);
	if (file_read(r, p, (size_t)n, what) != 0) {
		free(p);
		return -1;
	}
	p[n] = '\0';
	*out = p;
	if (len)
		*len = (size_t)n;
	return 0;
}

/* A field's primitive type name: "type": "string" or, as some writers put
 * it, "type": {"type": "string", ...}.  NULL for anything else. */
static const char *field_type(json_t *field)
{
	json_t *t = json_object_get(field, "type");
	if (json_is_object(t))
		t = json_object_get(t, "type");
	return json_string_value(t);
}

/* Checks one record of the writer schema: returns 0 for relationship_v1
 * (setting *nfields), 1 for schema_v1, -1 for anything else. */
static int schema_record_kind(json_t *rec, int *nfields)
{
	if (!json_is_object(rec))
		return -1;
	const char *type = json_string_value(json_object_get(rec, "type"));
	const char *name = json_string_value(json_object_get(rec, "name"));
	const char *ns = json_string_value(json_object_get(rec, "namespace"));
	json_t *fields = json_object_get(rec, "fields");
	if (!type || strcmp(type, "record") != 0 || !name ||
	    !json_is_array(fields))
		return -1;
	char full[256];
	if (strchr(name, '.') || !ns)
		snprintf(full, sizeof(full), "%s", name);
	else
		snprintf(full, sizeof(full), "%s.%s", ns, name);
	size_t n = json_array_size(fields);
	if (strcmp(full, "com.authzed.spicedb.backup.schema_v1") == 0) {
		json_t *f = json_array_get(fields, 0);
		const char *fn = json_string_value(json_object_get(f, "name"));
		const char *ft = field_type(f);
		if (n != 1 || !fn || strcmp(fn, "schema_text") != 0 || !ft ||
		    strcmp(ft, "string") != 0)
			return -1;
		return 1;
	}
	if (strcmp(full, "com.authzed.spicedb.backup.relationship_v1") != 0)
		return -1;
	if (n != NREL_FIELDS && n != NREL_FIELDS - 1)
		return -1;
	for (size_t i = 0; i < n; i++) {
		json_t *f = json_array_get(fields, i);
		const char *fn = json_string_value(json_object_get(f, "name"));
		const char *ft = field_type(f);
		const char *want = i == 7   ? "bytes"
		                   : i == 8 ? "long"
		                            : "string";
		if (!fn || strcmp(fn, relationship_fields[i]) != 0 || !ft ||
		    strcmp(ft, want) != 0)
			return -1;
	}
	*nfields = (int)n;
	return 0;
}

static int check_writer_schema(backup_reader *r, const char *text, size_t len,
                               uint64_t at)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, 0, &jerr);
	int kinds[2] = {-1, -1};
	int nfields = 0;
	if (root && json_is_array(root) && json_array_size(root) == 2) {
		kinds[0] =
		    schema_record_kind(json_array_get(root, 0), &nfields);
		kinds[1] =
		    schema_record_kind(json_array_get(root, 1), &nfields);
	}
	json_decref(root);
	if (!((kinds[0] == 0 && kinds[1] == 1) ||
	      (kinds[0] == 1 && kinds[1] == 0)))
		return reader_fail(r,
		                   "not a zed backup: the Avro schema at "
		                   "byte %" PRIu64 " is not the union of "
		                   "com.authzed.spicedb.backup.relationship_v1 "
		                   "and schema_v1",
		                   at);
	r->rel_branch = kinds[0] == 0 ? 0 : 1;
	r->nrel_fields = nfields;
	return 0;
}

static int read_header(backup_reader *r)
{
	char magic[4];
	size_t got = fread(magic, 1, 4, r->in);
	r->pos = got;
	if (got < 4 || memcmp(magic, avro_magic, 4) != 0) {
		if (got < 4 && !ferror(r->in) &&
		    memcmp(magic, avro_magic, got) == 0 && got > 0)
			return reader_fail(r,
			                   "truncated: the file ends at byte "
			                   "%zu inside the Avro magic",
			                   got);
		return reader_fail(r, "not a zed backup: no Avro object "
		                      "container magic (Obj 1) at byte 0");
	}
	bool have_schema = false, have_codec = false;
	size_t total = 0;
	for (;;) {
		int64_t count;
		uint64_t at = r->pos;
		if (file_long(r, &count, "the file metadata", NULL) != 0)
			return -1;
		if (count == 0)
			break;
		if (count < 0) {
			int64_t size;
			/* A negative count is followed by the block's size;
			 * INT64_MIN has no positive counterpart. */
			count = count == INT64_MIN ? INT64_MAX : -count;
			if (file_long(r, &size, "the file metadata", NULL) != 0)
				return -1;
		}
		if (count > 1024)
			return reader_fail(r,
			                   "corrupt: the file metadata at byte "
			                   "%" PRIu64 " claims %" PRId64
			                   " entries",
			                   at, count);
		for (int64_t i = 0; i < count; i++) {
			char *key = NULL, *value = NULL;
			size_t vlen = 0;
			uint64_t vat;
			if (file_bytes(r, &key, NULL, 4096,
			               "a file metadata key") != 0)
				return -1;
			vat = r->pos;
			if (file_bytes(r, &value, &vlen, 64u << 20,
			               "a file metadata value") != 0) {
				free(key);
				return -1;
			}
			total += vlen;
			int rc = 0;
			if (strcmp(key, "avro.schema") == 0) {
				have_schema = true;
				rc = check_writer_schema(r, value, vlen, vat);
			} else if (strcmp(key, "avro.codec") == 0) {
				have_codec = true;
				if (strcmp(value, "snappy") == 0)
					r->snappy = true;
				else if (strcmp(value, "null") != 0)
					rc = reader_fail(
					    r,
					    "unsupported Avro codec \"%.64s\" "
					    "at byte %" PRIu64
					    " (zed writes snappy; null and "
					    "snappy are read)",
					    value, vat);
			} else if (strcmp(key, BACKUP_ZEDTOKEN_KEY) == 0) {
				free(r->zedtoken);
				r->zedtoken = value;
				value = NULL;
			}
			free(key);
			free(value);
			if (rc != 0)
				return -1;
			if (total > (128u << 20))
				return reader_fail(r,
				                   "corrupt: the file metadata "
				                   "exceeds 128 MiB");
		}
	}
	if (!have_schema)
		return reader_fail(r, "not a zed backup: the Avro file has no "
		                      "writer schema (avro.schema)");
	(void)have_codec; /* absent means null, as the spec says */
	if (file_read(r, r->sync, 16, "the sync marker") != 0)
		return -1;
	if (!r->zedtoken)
		r->zedtoken = xstrdup("");
	r->done_off = r->pos;
	return 0;
}

/* Reads the next block into r->data.  Returns 1, 0 at the end, -1. */
static int read_block(backup_reader *r)
{
	free(r->data);
	r->data = NULL;
	r->data_len = r->data_pos = 0;
	r->done_off = r->pos;
	r->block_start = r->pos;
	bool eof = false;
	int64_t count, size;
	if (file_long(r, &count, "a block header", &eof) != 0)
		return -1;
	if (eof) {
		r->at_end = true;
		return 0;
	}
	if (file_long(r, &size, "a block header", NULL) != 0)
		return -1;
	if (count < 0 || size < 0 || (uint64_t)size > BACKUP_MAX_BLOCK_BYTES ||
	    (uint64_t)count > BACKUP_MAX_BLOCK_BYTES)
		return reader_fail(r,
		                   "corrupt: the block at byte %" PRIu64
		                   " has an impossible header (%" PRId64
		                   " records, %" PRId64 " bytes)",
		                   r->block_start, count, size);
	char *raw = xmalloc((size_t)size + 1);
	if (file_read(r, raw, (size_t)size, "a block") != 0) {
		free(raw);
		return -1;
	}
	uint8_t sync[16];
	if (file_read(r, sync, 16, "a block's sync marker") != 0) {
		free(raw);
		return -1;
	}
	if (memcmp(sync, r->sync, 16) != 0) {
		free(raw);
		return reader_fail(r,
		                   "corrupt: the sync marker at byte %" PRIu64
		                   " (end of the block at byte %" PRIu64
		                   ") does not match the file's",
		                   r->pos - 16, r->block_start);
	}
	if (r->snappy) {
		size_t ulen;
		if (size < 4 ||
		    snappy_uncompressed_length(raw, (size_t)size - 4, &ulen) !=
		        SNAPPY_OK ||
		    ulen > BACKUP_MAX_BLOCK_BYTES) {
			free(raw);
			return reader_fail(r,
			                   "corrupt: the block at byte %" PRIu64
			                   " is not valid snappy data",
			                   r->block_start);
		}
		char *u = xmalloc(ulen + 1);
		if (snappy_uncompress(raw, (size_t)size - 4, u, &ulen) !=
		    SNAPPY_OK) {
			free(raw);
			free(u);
			return reader_fail(r,
			                   "corrupt: the block at byte %" PRIu64
			                   " is not valid snappy data",
			                   r->block_start);
		}
		const uint8_t *c = (const uint8_t *)raw + size - 4;
		uint32_t want = (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 |
		                (uint32_t)c[2] << 8 | c[3];
		if (crc32_ieee((const uint8_t *)u, ulen) != want) {
			free(raw);
			free(u);
			return reader_fail(r,
			                   "corrupt: the block at byte %" PRIu64
			                   " fails its CRC32 check",
			                   r->block_start);
		}
		free(raw);
		r->data = u;
		r->data_len = ulen;
	} else {
		r->data = raw;
		r->data_len = (size_t)size;
	}
	r->remaining = count; /* 0: an empty block, legal, skipped */
	return 1;
}

/* In-block decoding.  Errors name the block's offset. */
static int block_long(backup_reader *r, int64_t *v)
{
	uint64_t z = 0;
	for (int shift = 0; shift < 70; shift += 7) {
		if (r->data_pos >= r->data_len)
			return reader_fail(
			    r,
			    "corrupt: a record runs past the end "
			    "of the block at byte %" PRIu64,
			    r->block_start);
		uint8_t c = (uint8_t)r->data[r->data_pos++];
		z |= (uint64_t)(c & 0x7F) << shift;
		if (!(c & 0x80)) {
			*v = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
			return 0;
		}
	}
	return reader_fail(r,
	                   "corrupt: an invalid Avro long in the block at "
	                   "byte %" PRIu64,
	                   r->block_start);
}

/* A string/bytes value: its offset and length in r->data. */
static int block_bytes(backup_reader *r, size_t *off, size_t *len)
{
	int64_t n;
	if (block_long(r, &n) != 0)
		return -1;
	if (n < 0 || (uint64_t)n > r->data_len - r->data_pos)
		return reader_fail(r,
		                   "corrupt: a string runs past the end of "
		                   "the block at byte %" PRIu64,
		                   r->block_start);
	*off = r->data_pos;
	*len = (size_t)n;
	r->data_pos += (size_t)n;
	return 0;
}

/* Reads the union index of the next record, fetching blocks as needed.
 * Returns 1, 0 at the end, -1. */
static int next_record(backup_reader *r, int64_t *branch)
{
	while (r->remaining == 0) {
		if (r->data && r->data_pos != r->data_len)
			return reader_fail(r,
			                   "corrupt: the block at byte %" PRIu64
			                   " has bytes after its records",
			                   r->block_start);
		if (r->at_end)
			return 0;
		int rc = read_block(r);
		if (rc <= 0)
			return rc;
	}
	if (block_long(r, branch) != 0)
		return -1;
	if (*branch != 0 && *branch != 1)
		return reader_fail(r,
		                   "corrupt: a record in the block at byte "
		                   "%" PRIu64 " has union branch %" PRId64,
		                   r->block_start, *branch);
	r->remaining--;
	return 1;
}

backup_reader *backup_reader_open(FILE *in, char error[BACKUP_ERROR_LEN])
{
	backup_reader *r = xcalloc(1, sizeof(*r));
	r->in = in;
	int64_t branch;
	int rc = read_header(r);
	if (rc == 0) {
		rc = next_record(r, &branch);
		if (rc == 0) {
			snprintf(
			    r->error, sizeof(r->error),
			    "not a zed backup: the file has no schema record "
			    "(it ends at byte %" PRIu64 ")",
			    r->pos);
			rc = -1;
		} else if (rc == 1 && branch == r->rel_branch) {
			snprintf(r->error, sizeof(r->error),
			         "not a zed backup: the first record (block at "
			         "byte %" PRIu64 ") is not the schema",
			         r->block_start);
			rc = -1;
		} else if (rc == 1) {
			size_t off, len;
			rc = block_bytes(r, &off, &len);
			if (rc == 0)
				r->schema_text = xstrndup(r->data + off, len);
		}
	}
	if (rc != 0) {
		snprintf(error, BACKUP_ERROR_LEN, "%s", r->error);
		backup_reader_free(r);
		return NULL;
	}
	return r;
}

int backup_reader_next(backup_reader *r, backup_relationship *out)
{
	int64_t branch;
	int rc = next_record(r, &branch);
	if (rc <= 0)
		return rc;
	if (branch != r->rel_branch)
		return reader_fail(r,
		                   "corrupt: a second schema record in the "
		                   "block at byte %" PRIu64,
		                   r->block_start);
	size_t off[8], len[8];
	for (int i = 0; i < 8; i++)
		if (block_bytes(r, &off[i], &len[i]) != 0)
			return -1;
	int64_t expiration = BACKUP_NO_EXPIRATION;
	if (r->nrel_fields == NREL_FIELDS && block_long(r, &expiration) != 0)
		return -1;
	/* Copy the strings out, NUL-terminated. */
	size_t need = 0;
	for (int i = 0; i < 8; i++)
		need += len[i] + 1;
	if (need > r->strs_cap) {
		r->strs = xrealloc(r->strs, need);
		r->strs_cap = need;
	}
	char *p = r->strs;
	const char *s[8];
	for (int i = 0; i < 8; i++) {
		memcpy(p, r->data + off[i], len[i]);
		p[len[i]] = '\0';
		if (i < 7 && memchr(p, '\0', len[i]))
			return reader_fail(r,
			                   "corrupt: a NUL byte inside %s in "
			                   "the block at byte %" PRIu64,
			                   relationship_fields[i],
			                   r->block_start);
		s[i] = p;
		p += len[i] + 1;
	}
	out->object_type = s[0];
	out->object_id = s[1];
	out->relation = s[2];
	out->subject_object_type = s[3];
	out->subject_object_id = s[4];
	out->subject_relation = s[5];
	out->caveat_name = s[6];
	out->caveat_context = (const uint8_t *)s[7];
	out->caveat_context_len = len[7];
	out->expiration_ms = expiration;
	if (r->remaining == 0 && r->data_pos == r->data_len)
		r->done_off = r->pos;
	return 1;
}

const char *backup_reader_zedtoken(const backup_reader *r)
{
	return r->zedtoken;
}

const char *backup_reader_schema(const backup_reader *r)
{
	return r->schema_text;
}

const uint8_t *backup_reader_sync(const backup_reader *r)
{
	return r->sync;
}

uint64_t backup_reader_offset(const backup_reader *r)
{
	return r->done_off;
}

const char *backup_reader_error(const backup_reader *r)
{
	return r->error;
}

void backup_reader_free(backup_reader *r)
{
	if (!r)
		return;
	free(r->zedtoken);
	free(r->schema_text);
	free(r->data);
	free(r->strs);
	free(r);
}
