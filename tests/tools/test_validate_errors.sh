#!/usr/bin/env bash
# `pemba validate` on malformed and failing files: each file under data/
# must produce the expected exit status and reason, and nothing may crash.
set -uo pipefail
source "$(dirname "$0")/expect.sh"

expect false_assert_true.yaml 1 \
	"false_assert_true.yaml:12:7: assertTrue failed: document:1#view@user:tom: expected permission, got no permission" \
	"FAIL $data/false_assert_true.yaml (1 failure)"
expect false_assert_false.yaml 1 \
	"assertFalse failed: document:1#view@user:anne: expected no permission, got permission"
expect bad_schema.yaml 1 "bad_schema.yaml:5:32: invalid schema" "nosuchrelation"
expect bad_relationship_syntax.yaml 1 \
	"bad_relationship_syntax.yaml:8: cannot parse relationship" \
	"document:2#viewer@user anne" "offset 22"
expect bad_relationship_schema.yaml 1 \
	"bad_relationship_schema.yaml:8: cannot load relationship \`document:1#editor@user:anne\`" \
	"editor"
expect broken_yaml.yaml 1 "YAML error at line"
expect missing_schema.yaml 1 "the file has no 'schema'"
expect wrong_types.yaml 1 "'relationships' must be a string, found a list" \
	"'assertions' must be a mapping"
expect repeated_relationship.yaml 1 \
	"found repeated relationship \`document:1#viewer@user:anne#...\`"
# An undefined caveat: refused while caveats are unsupported, unknown after.
expect caveated_relationship.yaml 1 \
	"caveated_relationship.yaml:7: " \
	"\`document:1#viewer@user:anne[some_caveat]\`"
# A context the schema does not use is harmless, as in SpiceDB.
expect assertion_context.yaml 0 "OK $data/assertion_context.yaml (1 assertion)"
expect assertion_bad_context.yaml 1 \
	"assertion_bad_context.yaml:10:7: assertTrue \`document:1#viewer@user:anne with notjson\`: the caveat context after ' with ' must be a JSON object" \
	"assertion_bad_context.yaml:11:7: assertTrue \`document:1#viewer@user:anne[somecaveat]\`: cannot specify a caveat or expiration on an assertion" \
	"(2 failures)"
expect bad_assertion.yaml 1 "cannot parse assertTrue \`document:1#viewer\`" \
	"expected '@' after the relation"
expect not_a_mapping.yaml 1 "the file must be a YAML mapping"
expect no_such_file.yaml 1 "cannot read" "No such file or directory"
# assertCaveated fails on a definite answer and says which one came back;
# needs no caveat evaluation (no relationship is caveated).
expect assert_caveated_uncaveated.yaml 1 \
	"assert_caveated_uncaveated.yaml:17:7: assertCaveated failed: document:1#view@user:anne: expected caveated, got permission" \
	"assert_caveated_uncaveated.yaml:18:7: assertCaveated failed: document:1#view@user:bob: expected caveated, got no permission" \
	"(2 failures)"

# Several files: one failing makes the run fail, and the summary counts both.
"$PEMBA_BINARY" validate "$data/expected_relations.yaml" \
	"$data/false_assert_true.yaml" >"$out" 2>&1
status=$?
problem=$(run_problem "$status" 1)
if [[ -z "$problem" ]] && ! grep -q -F "2 files: 1 passed, 1 failed" "$out"; then
	problem="no '2 files: 1 passed, 1 failed' summary"
fi
report "two files, one failing" "$problem"

finish
