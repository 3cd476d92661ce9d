/*
 * backup_format.h -- zed's backup file: writer and reader.
 *
 * The file is an Avro object container file (Avro 1.x spec, "Object
 * Container Files") with the snappy codec, written as zed's
 * pkg/backupformat writes it:
 *
 *   - writer schema: a union of two records in namespace
 *     com.authzed.spicedb.backup, relationship_v1 first:
 *       relationship_v1 { object_type, object_id, relation,
 *         subject_object_type, subject_object_id, subject_relation,
 *         caveat_name: string; caveat_context: bytes;
 *         expiration: long (logicalType timestamp-millis) }
 *       schema_v1 { schema_text: string }
 *   - the first record is the schema_v1, every later one a relationship_v1;
 *   - the zedtoken text is in the file metadata under
 *     com.authzed.spicedb.zedtoken.v1;
 *   - caveat_context is the protobuf encoding of a google.protobuf.Struct
 *     (empty without a caveat); this layer treats it as opaque bytes;
 *   - "no expiration" is Go's zero time: BACKUP_NO_EXPIRATION.
 *
 * The format has no trailer: a file cut exactly at a block boundary reads
 * as a shorter complete file (cuts inside a block, the header or a block
 * header are refused).  While `pemba backup create` runs, FILE.lock marks
 * the file as incomplete.
 *
 * Memory is bounded by one block (the writer ends a block at about
 * BACKUP_BLOCK_BYTES of records or when asked; the reader refuses blocks
 * above BACKUP_MAX_BLOCK_BYTES).  Nothing here prints: errors are returned
 * as text that names the byte offset in the file where it can.
 */
#ifndef PEMBA_TOOLS_BACKUP_FORMAT_H
#define PEMBA_TOOLS_BACKUP_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Go's zero time.Time in Unix milliseconds: a relationship without an
 * expiration. */
#define BACKUP_NO_EXPIRATION INT64_C(-62135596800000)

#define BACKUP_ZEDTOKEN_KEY "com.authzed.spicedb.zedtoken.v1"

/* The writer ends a block once its records take this many bytes. */
#define BACKUP_BLOCK_BYTES (256u * 1024u)
/* The reader refuses blocks larger than this (compressed or not). */
#define BACKUP_MAX_BLOCK_BYTES (256u * 1024u * 1024u)

#define BACKUP_ERROR_LEN 512

/* One relationship.  Strings are NUL-terminated; "" for an absent subject
 * relation or caveat.  caveat_context is a protobuf-encoded
 * google.protobuf.Struct (caveat_context_len 0: none). */
typedef struct backup_relationship {
	const char *object_type, *object_id, *relation;
	const char *subject_object_type, *subject_object_id, *subject_relation;
	const char *caveat_name;
	const uint8_t *caveat_context;
	size_t caveat_context_len;
	int64_t expiration_ms; /* BACKUP_NO_EXPIRATION: none */
} backup_relationship;

/* ===================================================================== */
/* Writer                                                                */
/* ===================================================================== */

typedef struct backup_writer backup_writer;

/* Starts a new file on out (positioned at its start, or a pipe): writes the
 * header (schema, codec, zedtoken metadata, a random sync marker).  The
 * caller owns out and closes it after backup_writer_free().  Returns the
 * writer, or NULL with error filled (out of space, write error). */
backup_writer *backup_writer_create(FILE *out, const char *zedtoken,
                                    char error[BACKUP_ERROR_LEN]);

/* Continues a file whose header (with sync marker `sync`, from
 * backup_reader_sync()) and complete blocks are already in out, which the
 * caller has positioned at the end of the last complete block (and
 * truncated there).  `offset` is that position.  Never fails. */
backup_writer *backup_writer_continue(FILE *out, const uint8_t sync[16],
                                      uint64_t offset);

/* Appends a record to the current block.  The schema record must be the
 * first record of a file.  The block is written out once it holds
 * BACKUP_BLOCK_BYTES.  Return 0, or -1 with backup_writer_error() set. */
int backup_writer_schema(backup_writer *w, const char *schema_text);
int backup_writer_relationship(backup_writer *w,
                               const backup_relationship *rel);

/* Writes the current block (if it has records) and fflush()es out.
 * Afterwards backup_writer_offset() is the size of a file holding exactly
 * the records appended so far.  Returns 0 or -1. */
int backup_writer_flush(backup_writer *w);

/* Bytes written to out so far (header + complete blocks). */
uint64_t backup_writer_offset(const backup_writer *w);

/* Writes the last block.  Returns 0 or -1. */
int backup_writer_finish(backup_writer *w);

/* The last error's text. */
const char *backup_writer_error(const backup_writer *w);

/* Frees the writer (out stays open; unwritten records are lost). */
void backup_writer_free(backup_writer *w);

/* ===================================================================== */
/* Reader                                                                */
/* ===================================================================== */

typedef struct backup_reader backup_reader;

/* Opens a backup read from in (which the caller owns and keeps open):
 * reads and checks the header (Avro magic, a writer schema of zed's
 * layout, codec null or snappy) and the first record, which must be the
 * schema.  Returns the reader, or NULL with error filled ("not a zed
 * backup: ...", "truncated: ...", "corrupt: ... at byte N"). */
backup_reader *backup_reader_open(FILE *in, char error[BACKUP_ERROR_LEN]);

/* The zedtoken from the metadata ("" when the file has none). */
const char *backup_reader_zedtoken(const backup_reader *r);

/* The schema text of the first record. */
const char *backup_reader_schema(const backup_reader *r);

/* The file's sync marker (16 bytes). */
const uint8_t *backup_reader_sync(const backup_reader *r);

/* Reads the next relationship into *out; its strings stay valid until the
 * next call.  Returns 1, 0 at the end of the file, -1 on error
 * (backup_reader_error()): truncated, corrupt (CRC32, sync marker, record
 * encoding), a second schema record. */
int backup_reader_next(backup_reader *r, backup_relationship *out);

/* Offset just past the last block whose records were all returned. */
uint64_t backup_reader_offset(const backup_reader *r);

const char *backup_reader_error(const backup_reader *r);

void backup_reader_free(backup_reader *r);

#endif
