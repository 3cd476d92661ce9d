#!/usr/bin/env bash
# Caveats in `pemba validate`: assertCaveated passes only on a CONDITIONAL
# answer, assertTrue only on HAS, assertFalse only on NO, and a failure
# names the answer that came back; ` with {json}` is the check's context;
# expected relations mark caveated subjects with [...].
set -uo pipefail
source "$(dirname "$0")/expect.sh"

expect caveats_assertions.yaml 0 \
	"OK $data/caveats_assertions.yaml (6 assertions)"

f=caveats_assertions_wrong.yaml
expect $f 1 \
	"$f:16:7: assertTrue failed: document:1#view@user:anne: expected permission, got caveated (conditional permission)" \
	"$f:18:7: assertFalse failed: document:1#view@user:anne: expected no permission, got caveated (conditional permission)" \
	"$f:20:7: assertCaveated failed: document:1#view@user:anne with {\"somecondition\": 41}: expected caveated, got no permission" \
	"FAIL $data/$f (3 failures)"

f=caveats_expected_relations.yaml
expect $f 0 "OK $data/$f (0 assertions, 2 expected relations)"

finish
