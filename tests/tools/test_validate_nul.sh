#!/usr/bin/env bash
# `pemba validate` on files holding NUL bytes, raw or escaped: each is
# refused naming where the NUL is, never truncated at it (a value read as
# a C string would stop there: "user:anne\0junk" would be "user:anne").
# The files are written here: a raw NUL does not belong in a text file
# under data/.
set -uo pipefail
source "$(dirname "$0")/expect.sh"
data=$(mktemp -d)
trap 'rm -f "$out"; rm -rf "$data"' EXIT

schema='schema: |
  definition user {}
  caveat c(s string) { s == "a" }
  definition doc {
    relation viewer: user | user with c
    permission view = viewer
  }'

# A raw NUL in the YAML: libyaml refuses it; the position is the NUL's.
printf 'schema: "definition user {}"\nrelationships: "x\0y"\n' >"$data/raw_nul.yaml"
expect raw_nul.yaml 1 \
	"raw_nul.yaml:2:18: YAML error at line 2, column 18: control characters are not allowed"

# Double-quoted escapes put a NUL in a value: refused, naming the value
# and where in it.
printf '%s\n' 'schema: "definition user {}\0definition doc {}"' 'relationships: ""' \
	>"$data/escaped_schema.yaml"
expect escaped_schema.yaml 1 \
	"escaped_schema.yaml:1:9: 'schema' contains a NUL byte (line 1, column 19 of its value)"
printf '%s\n' "$schema" 'relationships: "doc:1#viewer@user:anne\x00junk"' \
	>"$data/escaped_relationship.yaml"
expect escaped_relationship.yaml 1 "'relationships' contains a NUL byte (line 1, column 23 of its value)"
printf '%s\n' "$schema" 'relationships: ""' 'assertions:' '  assertTrue:' \
	'  - "doc:1#view@user:anne\u0000"' >"$data/escaped_assertion.yaml"
expect escaped_assertion.yaml 1 "escaped_assertion.yaml:11:5: assertTrue item contains a NUL byte"
printf '%s\n' "$schema" 'relationships: ""' 'validation:' '  "doc:1#view\0":' \
	'  - "[user:anne] is <doc:1#viewer>"' >"$data/escaped_validation_key.yaml"
expect escaped_validation_key.yaml 1 "a 'validation' key contains a NUL byte"

# A schemaFile with a NUL: refused at the NUL's line and column.
printf 'definition user {}\ndefinition doc {\n\trelation viewer: us\0er\n}\n' >"$data/nul.zed"
printf '%s\n' 'schemaFile: nul.zed' 'relationships: ""' >"$data/nul_schema_file.yaml"
expect nul_schema_file.yaml 1 "contains a NUL byte at line 3, column 21"

# \u0000 inside JSON text (a caveat context) stays six characters in the
# YAML; the context is refused saying why.
printf '%s\n' "$schema" 'relationships: |' '  doc:1#viewer@user:anne[c:{"s":"\u0000"}]' \
	>"$data/nul_in_context.yaml"
expect nul_in_context.yaml 1 \
	"a string contains \\u0000 (NUL), which caveat contexts may not hold"
printf '%s\n' "$schema" 'relationships: |' '  doc:1#viewer@user:anne[c]' 'assertions:' \
	'  assertTrue:' "  - 'doc:1#view@user:anne with {\"s\": \"a\\u0000\"}'" \
	>"$data/nul_in_assertion_context.yaml"
expect nul_in_assertion_context.yaml 1 \
	"a string contains \\u0000 (NUL), which caveat contexts may not hold"

finish
