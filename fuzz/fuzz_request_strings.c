/*
 * fuzz_request_strings.c -- libFuzzer target for the checks request bytes
 * pass before protobuf-c unpacks them (svc_unpack: pb_guard's nesting
 * limit and string checks, then protobuf_c_message_unpack).
 *
 * The first input byte chooses a request type among those of every
 * method in the dispatch table (services_methods()); the rest is the
 * message.  Invariants, abort() on a violation:
 *   - refused: PEMBA_EINVAL with a message saying "invalid argument:
 *     field ..." or "malformed ...", and nothing returned;
 *   - accepted: every string in the unpacked message, at every level, is
 *     as long as protobuf-c's allocation for it says its wire bytes were
 *     (strlen(s) + 1 == allocation size: no NUL cut it short) and valid
 *     UTF-8 (checked here independently of src/util/utf8.c); and packing
 *     the message again gives bytes that svc_unpack accepts.
 * protobuf-c's allocations are tracked through its allocator hook, so
 * the oracle knows each string's wire length without decoding the wire
 * format itself.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/pb_guard.h"
#include "api/services.h"
#include "pemba.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ===================================================================== */
/* Request types                                                         */
/* ===================================================================== */

static const ProtobufCMessageDescriptor *types[SERVICES_MAX_METHODS];
static size_t ntypes;

static void load_types(void)
{
	static svc_backend backend;
	grpc_method methods[SERVICES_MAX_METHODS];
	size_t n = services_methods(&backend, methods, SERVICES_MAX_METHODS);
	for (size_t i = 0; i < n; i++) {
		const ProtobufCMessageDescriptor *d =
		    svc_request_descriptor(methods[i].path);
		if (!d)
			abort(); /* a method without a request type */
		size_t k = 0;
		while (k < ntypes && types[k] != d)
			k++;
		if (k == ntypes)
			types[ntypes++] = d;
	}
}

/* ===================================================================== */
/* Allocation tracking                                                   */
/* ===================================================================== */

/* Open addressing, pointer -> size; cleared for every input. */
typedef struct slot {
	void *ptr;
	size_t size;
} slot;
static slot *table;
static size_t table_cap, table_used;

static size_t slot_of(void *p)
{
	uintptr_t h = (uintptr_t)p;
	h ^= h >> 17;
	h *= 0x9e3779b97f4a7c15ULL;
	return (size_t)(h >> 7) & (table_cap - 1);
}

static void table_put(void *p, size_t size)
{
	if ((table_used + 1) * 2 > table_cap) {
		slot *old = table;
		size_t old_cap = table_cap;
		table_cap = table_cap ? table_cap * 2 : 1024;
		table = calloc(table_cap, sizeof(*table));
		if (!table)
			abort();
		table_used = 0;
		for (size_t i = 0; i < old_cap; i++)
			if (old[i].ptr)
				table_put(old[i].ptr, old[i].size);
		free(old);
	}
	size_t i = slot_of(p);
	while (table[i].ptr && table[i].ptr != p)
		i = (i + 1) & (table_cap - 1);
	if (!table[i].ptr)
		table_used++;
	table[i] = (slot){p, size};
}

/* Size of a live allocation, or 0 if p is not one. */
static size_t table_get(void *p)
{
	if (!table_cap)
		return 0;
	size_t i = slot_of(p);
	while (table[i].ptr) {
		if (table[i].ptr == p)
			return table[i].size;
		i = (i + 1) & (table_cap - 1);
	}
	return 0;
}

static void table_clear(void)
{
	if (table)
		memset(table, 0, table_cap * sizeof(*table));
	table_used = 0;
}

static void *tracked_alloc(void *ctx, size_t size)
{
	void *p = malloc(size ? size : 1);
	if (!p)
		abort();
	table_put(p, size);
	return p;
}

static void tracked_free(void *ctx, void *p)
{
	free(p); /* the table is cleared per input; sizes stay for lookup */
}

static ProtobufCAllocator tracking = {tracked_alloc, tracked_free, NULL};

/* ===================================================================== */
/* The oracle                                                            */
/* ===================================================================== */

/* RFC 3629, written out from its table of well-formed sequences rather
 * than shared with the code under test. */
static bool valid_utf8(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t k;
		unsigned char lo = 0x80, hi = 0xBF;
		if (c <= 0x7F) {
			i++;
			continue;
		} else if (c >= 0xC2 && c <= 0xDF) {
			k = 1;
		} else if (c == 0xE0) {
			k = 2;
			lo = 0xA0;
		} else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
			k = 2;
		} else if (c == 0xED) {
			k = 2;
			hi = 0x9F;
		} else if (c == 0xF0) {
			k = 3;
			lo = 0x90;
		} else if (c >= 0xF1 && c <= 0xF3) {
			k = 3;
		} else if (c == 0xF4) {
			k = 3;
			hi = 0x8F;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t j = 2; j <= k; j++)
			if (s[i + j] < 0x80 || s[i + j] > 0xBF)
				return false;
		i += k + 1;
	}
	return true;
}

static void check_string(const ProtobufCFieldDescriptor *f, const char *s)
{
	if (!s)
		abort(); /* protobuf-c never leaves a string NULL */
	size_t len = strlen(s);
	size_t size = table_get((void *)s);
	if (size == 0) {
		/* Not allocated by the unpacker: only a default may be. */
		if (s != f->default_value && s != protobuf_c_empty_string)
			abort();
		if (len != 0)
			abort();
		return;
	}
	if (len + 1 != size)
		abort(); /* a NUL cut the string short */
	if (!valid_utf8((const unsigned char *)s, len))
		abort();
}

#define MEMBER(m, offset) ((const char *)(m) + (offset))

static void check_message(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (f->type != PROTOBUF_C_TYPE_STRING &&
		    f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)MEMBER(m, f->quantifier_offset) != f->id)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n =
			    *(const size_t *)MEMBER(m, f->quantifier_offset);
			void *const *items =
			    *(void *const *const *)MEMBER(m, f->offset);
			for (size_t k = 0; k < n; k++) {
				if (f->type == PROTOBUF_C_TYPE_STRING)
					check_string(f, items[k]);
				else
					check_message(items[k]);
			}
		} else if (f->type == PROTOBUF_C_TYPE_STRING) {
			check_string(
			    f, *(const char *const *)MEMBER(m, f->offset));
		} else {
			const ProtobufCMessage *sub =
			    *(const ProtobufCMessage *const *)MEMBER(m,
			                                             f->offset);
			if (sub)
				check_message(sub);
		}
	}
}

/* ===================================================================== */
/* Entry point                                                           */
/* ===================================================================== */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ntypes)
		load_types();
	if (size == 0)
		return 0;
	const ProtobufCMessageDescriptor *d = types[data[0] % ntypes];
	/* An exact-size heap copy, so ASan catches a read one past the end. */
	size_t len = size - 1;
	uint8_t *bytes = malloc(len ? len : 1);
	if (!bytes)
		abort();
	memcpy(bytes, data + 1, len);

	/* The function handlers call. */
	ProtobufCMessage *m = NULL;
	pemba_error err = {0};
	int rc = svc_unpack(d, bytes, len, &m, &err);
	if (rc != 0) {
		if (rc != PEMBA_EINVAL || err.code != PEMBA_EINVAL || m ||
		    (strncmp(err.message, "invalid argument: field ", 24) !=
		         0 &&
		     strncmp(err.message, "malformed ", 10) != 0))
			abort();
	} else {
		if (!m || m->descriptor != d)
			abort();
		protobuf_c_message_free_unpacked(m, NULL);
	}

	/* The same bytes, unpacked with tracked allocations once the guard
	 * accepts them (svc_unpack is pb_guard_check, then the unpack, but
	 * does not take an allocator): every string is whole and UTF-8. */
	pemba_error gerr = {0};
	if (pb_guard_check(d, bytes, len, PB_GUARD_MAX_DEPTH, &gerr) == 0) {
		table_clear();
		ProtobufCMessage *t =
		    protobuf_c_message_unpack(d, &tracking, len, bytes);
		if ((t != NULL) != (rc == 0))
			abort(); /* svc_unpack disagrees with guard + unpack */
		if (t) {
			check_message(t);
			/* Packed again, it passes again. */
			size_t n = protobuf_c_message_get_packed_size(t);
			uint8_t *again = malloc(n ? n : 1);
			if (!again)
				abort();
			protobuf_c_message_pack(t, again);
			ProtobufCMessage *m2 = NULL;
			if (svc_unpack(d, again, n, &m2, &gerr) != 0)
				abort();
			protobuf_c_message_free_unpacked(m2, NULL);
			free(again);
			protobuf_c_message_free_unpacked(t, &tracking);
		}
	} else if (rc == 0) {
		abort(); /* svc_unpack accepted what the guard refuses */
	}
	free(bytes);
	return 0;
}
