#!/usr/bin/env bash
# `pemba validate --datastore URI`: the option's usage errors, and the
# refusal of a datastore that is not empty (validate writes the file's
# schema and relationships into it), naming the URI without its password.
# Each case: exit status and fixed strings of the output; nothing may
# crash or trip a sanitizer.
set -uo pipefail
source "$(dirname "$0")/expect.sh"

dir=$(mktemp -d)
trap 'rm -f "$out"; rm -rf "$dir"' EXIT
good=$data/assertion_context.yaml

# check NAME WANT_STATUS TEXT... -- ARG...: runs `pemba validate ARG...`.
check() {
	local name=$1 want_status=$2
	shift 2
	local texts=()
	while [[ $1 != -- ]]; do
		texts+=("$1")
		shift
	done
	shift
	"$PEMBA_BINARY" validate "$@" >"$out" 2>&1
	local status=$?
	local problem
	problem=$(run_problem "$status" "$want_status")
	if [[ -z "$problem" ]]; then
		for text in "${texts[@]}"; do
			if ! grep -q -F -- "$text" "$out"; then
				problem="output lacks: $text"
				break
			fi
		done
	fi
	report "$name" "$problem"
}

check missing_uri 2 "pemba validate: --datastore needs a URI" "usage:" -- \
	--datastore
check empty_uri 2 "--datastore needs a URI" -- --datastore= "$good"
check twice 2 "pemba validate: --datastore given twice" -- \
	--datastore sqlite::memory: --datastore sqlite::memory: "$good"
check two_files 2 \
	"pemba validate: --datastore takes one FILE (got 2): each file needs an empty datastore" -- \
	--datastore sqlite::memory: "$good" "$good"
check no_file 2 "pemba validate: no files given" -- --datastore sqlite::memory:
check bad_uri 2 "pemba validate: --datastore nosuch://x: cannot open the datastore" -- \
	--datastore nosuch://x "$good"
# A password never shows (the server is not there: port 1 refuses).
check password_hidden 2 "--datastore postgres://u:***@127.0.0.1:1/db" \
	"cannot open the datastore" -- \
	--datastore postgres://u:s3cret@127.0.0.1:1/db "$good"
expect_absent password_hidden s3cret
# The default and a named in-memory datastore are fresh every run.
check memory_default 0 "OK $good (1 assertion)" -- "$good"
check memory_named 0 "OK $good (1 assertion)" -- \
	--datastore=sqlite::memory:validate "$good"
# A file datastore: the first run fills it (and it keeps what was
# loaded), the next is refused before anything is written.
uri="sqlite://$dir/ds.db"
check file_fresh 0 "OK $good (1 assertion)" "1 file: 1 passed, 0 failed" -- \
	--datastore "$uri" "$good"
check file_not_empty 2 \
	"pemba validate: --datastore $uri: the datastore is not empty (head revision" \
	"validate writes the file's schema and relationships into it, so it needs a fresh one" -- \
	--datastore "$uri" "$good"
check file_still_refused 2 "is not empty" -- -q --datastore "$uri" "$good"

finish
