#!/usr/bin/env bash
# The `validation:` block (expected relations) of `pemba validate`: the
# subjects found by expanding each key recursively must be exactly those
# listed, each through the listed relationships, with the listed
# exclusions; every mismatch is reported with the key and its position.
set -uo pipefail
source "$(dirname "$0")/expect.sh"

# Nested groups, `#...`, relationship order, wildcards with exclusions,
# wildcard beside a concrete subject, intersection with a wildcard, empty
# and null lists: all hold.
expect expected_relations.yaml 0 \
	"OK $data/expected_relations.yaml (1 assertion, 7 expected relations)"

f=expected_relations_wrong.yaml
expect $f 1 \
	"$f:24:7: validation \`document:1#view\`: subject \`user:anne\` is found through different relationships: specified <document:1#owner>, computed <document:1#owner>/<group:eng#member>" \
	"$f:25:7: validation \`document:1#view\`: missing expected subject \`user:zoe\`" \
	"$f:26:7: validation \`document:1#view\`: subject \`user:carl\` is not caveated, but is listed with the [...] caveat marker" \
	"$f:27:7: validation \`document:1#view\`: subject \`user:carl\` is not a wildcard, so it cannot have excluded subjects" \
	"$f:28:7: validation \`document:1#view\`: \`is <document:1#viewer>\` names no subject" \
	"$f:23:3: validation \`document:1#view\`: subject \`group:eng#member\` is found (through <document:1#viewer>) but is not listed" \
	"$f:30:7: validation \`document:2#public_view\`: wildcard \`user:*\` has different excluded subjects: specified {user:erin}, computed {user:dan}" \
	"$f:31:3: validation \`document:1#nosuchpermission\`: cannot expand:" \
	"FAIL $data/$f (8 failures)"
# user:carl is listed (twice, wrongly), so it is not also "not listed".
expect_absent $f "subject \`user:carl\` is found"

f=expected_relations_syntax.yaml
expect $f 1 \
	"$f:11:3: cannot parse 'validation' key \`document:1viewer\`" \
	"$f:14:7: validation \`document:1#viewer\`: invalid subject \`useranne\`" \
	"$f:15:7: validation \`document:1#viewer\`: invalid resource and relation \`document:1viewer\`" \
	"$f:16:7: validation \`document:1#viewer\`: invalid subject \`user:*-{}\`" \
	"$f:17:7: validation \`document:1#viewer\`: invalid subject \`user:anne[df]\`" \
	"$f:18:22: validation \`document:2#viewer\`: expected a list" \
	"FAIL $data/$f (6 failures)"

expect expected_relations_cycle.yaml 1 \
	"expected_relations_cycle.yaml:13:3: validation \`group:a#member\`: cannot expand: max depth exceeded"

finish
