/*
 * fuzz_zedtoken.c -- libFuzzer target for ZedToken decoding.
 *
 * Feeds arbitrary bytes (not NUL-terminated: the decoder takes a length) to
 * zedtoken_parse() and zedtoken_decode().  Decoding must never read past
 * the input, must fail with PEMBA_EINVAL and a message on anything it does
 * not accept, and whatever it accepts must be canonical: re-encoding the
 * decoded revision (and fingerprint, version 2) for the same datastore in
 * the same version gives back exactly the input.
 * The same bytes go to foreign_token_decode() (pemba and SpiceDB tokens of
 * other datastores): it must accept every token zedtoken_parse accepts
 * (revisions up to INT64_MAX, the order keys' range),
 * and anything it accepts has a source, a revision of printable text and
 * ordered order keys.
 * abort() flags a violation.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/foreign_token.h"
#include "api/zedtoken.h"
#include "pemba.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_DATASTORE "00112233445566778899aabbccddeeff"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy, so ASan catches a read one past the end. */
	char *token = malloc(size ? size : 1);
	if (!token)
		return 0;
	memcpy(token, data, size);

	pemba_error err;
	zedtoken_info info;
	int rc = zedtoken_parse(token, size, &info, &err);
	if (rc != PEMBA_OK) {
		if (rc != PEMBA_EINVAL || err.code != PEMBA_EINVAL ||
		    err.message[0] == '\0')
			abort();
	} else {
		/* decode agrees with the digest parse saw; an accepted
		 * token is canonical: re-encoding gives the same bytes. */
		if (info.version != ZEDTOKEN_VERSION &&
		    info.version != ZEDTOKEN_VERSION_1)
			abort();
		if (info.version == ZEDTOKEN_VERSION_1 && info.fingerprint)
			abort();
		pemba_revision rev = 0;
		int drc =
		    zedtoken_decode(token, size, FUZZ_DATASTORE, &rev, &err);
		int ours = info.datastore_digest ==
		           zedtoken_datastore_digest(FUZZ_DATASTORE);
		if (ours != (drc == PEMBA_OK))
			abort();
		if (drc == PEMBA_OK) {
			char again[ZEDTOKEN_BUFSIZE];
			size_t n =
			    info.version == ZEDTOKEN_VERSION_1
			        ? zedtoken_encode_v1(rev, FUZZ_DATASTORE, again)
			        : zedtoken_encode(rev, FUZZ_DATASTORE,
			                          info.fingerprint, again);
			if (n != size || memcmp(again, token, size) != 0)
				abort();
		} else if (!strstr(err.message, "another datastore")) {
			abort();
		}
	}

	foreign_token ft;
	pemba_error ferr;
	int frc = foreign_token_decode(token, size, &ft, &ferr);
	if (rc == PEMBA_OK && info.revision <= INT64_MAX && frc != PEMBA_OK)
		abort();
	if (frc == PEMBA_OK) {
		if (!ft.source[0] || !ft.revision[0] ||
		    ft.pos.lower > ft.pos.upper || ft.pos.source != ft.source ||
		    ft.pos.revision != ft.revision)
			abort();
		for (const char *c = ft.revision; *c; c++)
			if (*c < 0x21 || *c > 0x7e)
				abort();
	} else if (ferr.code != PEMBA_EINVAL || !ferr.message[0]) {
		abort();
	}

	/* Encoding any revision derived from the input round-trips. */
	if (size >= 8) {
		uint64_t r;
		memcpy(&r, data, 8);
		char tok[ZEDTOKEN_BUFSIZE];
		uint32_t fp = size >= 12
		                  ? (uint32_t)data[8] | (uint32_t)data[9] << 8 |
		                        (uint32_t)data[10] << 16 |
		                        (uint32_t)data[11] << 24
		                  : 0;
		size_t n = zedtoken_encode(r, FUZZ_DATASTORE, fp, tok);
		pemba_revision back = 0;
		zedtoken_info again;
		if (n > ZEDTOKEN_MAX_LEN ||
		    zedtoken_decode(tok, n, FUZZ_DATASTORE, &back, &err) !=
		        PEMBA_OK ||
		    back != r ||
		    zedtoken_parse(tok, n, &again, &err) != PEMBA_OK ||
		    again.fingerprint != fp)
			abort();
		n = zedtoken_encode_v1(r, FUZZ_DATASTORE, tok);
		if (zedtoken_decode(tok, n, FUZZ_DATASTORE, &back, &err) !=
		        PEMBA_OK ||
		    back != r)
			abort();
	}
	free(token);
	return 0;
}
