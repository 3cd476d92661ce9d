#!/usr/bin/env bash
# `pemba verify` between two `pemba serve-testing` processes (one in-memory
# datastore per token, so one server pair holds several cases):
#  - 100k identical relationships (imported with `relationship import`)
#    -> exit 0, `verify: equal`; also with tiny sort runs, so the external
#    sort's merge of many temporary files runs;
#  - one relationship changed on B among the 100k -> exit 1 and both
#    lines named (`only in A: ...`, `only in B: ...`) with the counts;
#  - the same data under a schema whose permission differs -> exit 1
#    naming the check that answers differently (`check differs: ...`);
#  - the real SpiceDB (tests/support/spicedb_facade) as either side ->
#    exit 0 when equal, 1 after a change (skipped when libspicedb.so is
#    absent and PEMBA_DIFF_ALLOW_SKIP=1 ... the other cases still run);
#  - errors: usage, bad counts, an unreachable side (exit 2 naming it).
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"
: "${PEMBA_SPICEDB_FACADE:=$(dirname "$PEMBA_BINARY")/spicedb_facade}"
here=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	rm -rf "$work"
}
trap cleanup EXIT
touch "$work/out" "$work/err"

# shellcheck source=client_expect.sh
source "$here/client_expect.sh"

# start NAME COMMAND...: starts a server that prints "port N" on stderr;
# sets $port.  1 when it reports none.
start() {
	local name=$1 _
	shift
	"$@" >"$work/$name.out" 2>"$work/$name.err" &
	pids+=($!)
	port=""
	for _ in $(seq 150); do
		port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/$name.err" "$work/$name.out" | head -n 1)
		[[ -n "$port" ]] && return 0
		kill -0 "${pids[-1]}" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
for name in a b; do
	start "$name" "$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 || {
		echo "FAIL serve-testing ($name) did not start"
		echo "0 passed, 1 failed"
		exit 1
	}
	eval "port_$name=$port"
done

# on PORT TOKEN ARGS...: pemba ARGS against 127.0.0.1:PORT.
on() {
	local p=$1 t=$2
	shift 2
	"$PEMBA_BINARY" "$@" --insecure --endpoint "127.0.0.1:$p" --token "$t"
}
# verify PORT_A TOKEN_A PORT_B TOKEN_B [FLAGS...]: runs pemba verify.
verify() {
	local pa=$1 ta=$2 pb=$3 tb=$4
	shift 4
	run verify --insecure --from-endpoint "127.0.0.1:$pa" --from-token "$ta" \
		--to-endpoint "127.0.0.1:$pb" --to-token "$tb" "$@"
}
setup_fail() {
	echo "FAIL setup: $1: $(cat "$work/err")"
	echo "$passed passed, $((failed + 1)) failed"
	exit 1
}

cat >"$work/schema.zed" <<'ZED'
caveat on_day(day string, hour int) {
	day == "tuesday" && hour > 8
}

definition user {}

definition group {
	relation member: user
}

definition document {
	relation viewer: user | user:* | group#member | user with on_day
	relation editor: user
	permission edit = editor
	permission view = viewer + edit
}
ZED
# 100k relationships: 99k document viewers, 500 editors, 500 members and
# usersets.
awk 'BEGIN {
	for (i = 0; i < 99000; i++) printf "document:d%d#viewer@user:u%d\n", i, i % 997
	for (i = 0; i < 500; i++) printf "document:d%d#editor@user:u%d\n", i * 7, i % 31
	for (i = 0; i < 250; i++) printf "group:g%d#member@user:u%d\n", i % 50, i
	for (i = 0; i < 250; i++) printf "document:e%d#viewer@group:g%d#member\n", i, i % 50
}' >"$work/rels.txt"
for side in "$port_a a" "$port_b b"; do
	read -r p t <<<"$side"
	on "$p" "$t" schema write "$work/schema.zed" >/dev/null 2>"$work/err" || setup_fail "schema write"
	on "$p" "$t" relationship import "$work/rels.txt" >/dev/null 2>"$work/err" || setup_fail "import"
done

# ------------------------------------------------------------ equal
verify "$port_a" a "$port_b" b --checks 200
if ((status == 0)) && has_out "verify: equal" && has_out "schema: equal" &&
	has_out "relationships: A 100000, B 100000, in both 100000, only in A 0, only in B 0" &&
	has_out "checks: 200 of 200 agree" && has_out "lookups: 10 of 10 agree"; then
	ok "100k equal relationships: exit 0, schema, relationships, checks and lookups agree"
else
	fail "100k equal relationships: exit 0" "exit $status"
fi
mkdir "$work/tmp"
TMPDIR=$work/tmp PEMBA_TEST_VERIFY_RUN_BYTES=100000 verify "$port_a" a "$port_b" b --checks 0
if ((status == 0)) && has_out "in both 100000, only in A 0, only in B 0" &&
	has_out "checks: 0 of 0 agree" && [[ -z "$(ls -A "$work/tmp")" ]]; then
	ok "sorted in many temporary runs in \$TMPDIR (merge, none left): still equal"
else
	fail "sorted in temporary runs (merge): still equal" "exit $status"
fi

TMPDIR=$work/missing PEMBA_TEST_VERIFY_RUN_BYTES=100000 verify "$port_a" a "$port_b" b --checks 0
if ((status == 2)) && has_err "temporary file for sorting" && ! has_out "verify:"; then
	ok "a \$TMPDIR that cannot hold the runs: exit 2"
else
	fail "a \$TMPDIR that cannot hold the runs: exit 2" "exit $status"
fi

# ------------------------------------------------------------ one changed relationship
on "$port_b" b relationship delete document:d4242#viewer@user:u254 >/dev/null 2>"$work/err" || setup_fail delete
on "$port_b" b relationship create document:d4242#viewer@user:u255 >/dev/null 2>"$work/err" || setup_fail create
for runs in 0 100000; do
	PEMBA_TEST_VERIFY_RUN_BYTES=$runs verify "$port_a" a "$port_b" b --checks 10
	if ((status == 1)) && has_out "only in A: document:d4242#viewer@user:u254" &&
		has_out "only in B: document:d4242#viewer@user:u255" &&
		has_out "in both 99999, only in A 1, only in B 1" && has_out "verify: DIFFERENT" &&
		[[ $(grep -c "^only in" "$work/out") -eq 2 ]]; then
		ok "one relationship changed among 100k: exit 1 naming it (run bytes $runs)"
	else
		fail "one relationship changed among 100k: exit 1 naming it (run bytes $runs)" "exit $status"
	fi
done
verify "$port_a" a "$port_b" b --checks 0 --max-differences 1
if ((status == 1)) && [[ $(grep -c "^only in" "$work/out") -eq 1 ]] &&
	has_out "only in A 1, only in B 1"; then
	ok "--max-differences 1 prints one difference, counts all"
else
	fail "--max-differences 1 prints one difference, counts all" "exit $status"
fi

# ------------------------------------------------------------ a differing answer
# Tokens c and d: the same 30 relationships; d's view leaves out edit.
sed 's/permission view = viewer + edit/permission view = viewer/' "$work/schema.zed" >"$work/schema2.zed"
head -n 20 "$work/rels.txt" >"$work/small.txt"
echo "document:x1#editor@user:solo" >>"$work/small.txt"
echo "document:pub#viewer@user:*" >>"$work/small.txt" # never a check's subject
on "$port_a" c schema write "$work/schema.zed" >/dev/null 2>"$work/err" || setup_fail "schema c"
on "$port_b" d schema write "$work/schema2.zed" >/dev/null 2>"$work/err" || setup_fail "schema d"
on "$port_a" c relationship import "$work/small.txt" >/dev/null 2>"$work/err" || setup_fail "import c"
on "$port_b" d relationship import "$work/small.txt" >/dev/null 2>"$work/err" || setup_fail "import d"
verify "$port_a" c "$port_b" d --checks 100 --seed 7
if ((status == 1)) && has_out "check differs: document:x1 view user:solo: A=yes B=no" &&
	has_out "only in A 0, only in B 0" && has_out "in both 22" && has_out "schema differs" &&
	has_out "verify: DIFFERENT"; then
	ok "one differing answer (schema permission): exit 1 naming the check"
else
	fail "one differing answer (schema permission): exit 1 naming the check" "exit $status"
fi
verify "$port_a" c "$port_a" c --checks 100
if ((status == 0)) && has_out "checks: 42 of 42 agree" && has_out "verify: equal"; then
	ok "a side against itself: every sampled check (2 permissions x 21) agrees"
else
	fail "a side against itself: every sampled check agrees" "exit $status"
fi

# Token f: c's data under c's schema with a doc comment added.
sed 's|^definition document {|// Documents.\ndefinition document {|' "$work/schema.zed" >"$work/schema3.zed"
on "$port_b" f schema write "$work/schema3.zed" >/dev/null 2>"$work/err" || setup_fail "schema f"
on "$port_b" f relationship import "$work/small.txt" >/dev/null 2>"$work/err" || setup_fail "import f"
verify "$port_a" c "$port_b" f --checks 100
if ((status == 0)) && has_out "schema comment differs" && has_out "schema: equal" &&
	has_out "verify: equal"; then
	ok "a doc comment only: reported, still equal (exit 0)"
else
	fail "a doc comment only: reported, still equal (exit 0)" "exit $status"
fi

# ------------------------------------------------------------ on a terminal
if command -v script >/dev/null; then
	line=$(printf '%q ' "$PEMBA_BINARY" verify --insecure --from-endpoint "127.0.0.1:$port_a" \
		--from-token a --to-endpoint "127.0.0.1:$port_a" --to-token a --checks 20)
	SHELL=/bin/sh timeout 60 script -q -e -c "$line" /dev/null >"$work/out" 2>&1 </dev/null
	status=$?
	: >"$work/err"
	if ((status == 0)) && has_out "pemba: verify: side A: 100000 relationships read" &&
		has_out "pemba: verify: side B: 100000 relationships read" && has_out "verify: equal"; then
		ok "on a terminal: progress per side"
	else
		fail "on a terminal: progress per side" "exit $status"
	fi
else
	echo "skip terminal check: no script(1)"
fi

# ------------------------------------------------------------ consistency tokens
# Token g: c's schema and data, then a change after the token kept:
# read at the token, g equals c; at its head it does not (data and schema).
on "$port_b" g schema write "$work/schema.zed" >/dev/null 2>"$work/err" || setup_fail "schema g"
on "$port_b" g relationship import "$work/small.txt" >/dev/null 2>"$work/err" || setup_fail "import g"
g_token=$(on "$port_b" g relationship create document:late#viewer@user:late 2>"$work/err") || setup_fail "create g"
on "$port_b" g relationship delete document:late#viewer@user:late >/dev/null 2>"$work/err" || setup_fail "delete g"
on "$port_b" g relationship create document:later#viewer@user:later >/dev/null 2>"$work/err" || setup_fail "create g"
on "$port_b" g schema write "$work/schema3.zed" >/dev/null 2>"$work/err" || setup_fail "schema g 2"
sed 's/permission edit = editor/permission edit = editor + viewer/' "$work/schema3.zed" >"$work/schema4.zed"
on "$port_b" g schema write "$work/schema4.zed" >/dev/null 2>"$work/err" || setup_fail "schema g 3"
verify "$port_a" c "$port_b" g --checks 100
if ((status == 1)) && has_out "only in B: document:later#viewer@user:later" && has_out "schema differs"; then
	ok "at the head: the later relationship and schema change differ"
else
	fail "at the head: the later relationship and schema change differ" "exit $status"
fi
on "$port_b" g relationship create document:late2#viewer@user:late >/dev/null 2>"$work/err" || setup_fail "create g late2"
verify "$port_a" c "$port_b" g --checks 100 --to-consistency-token "$g_token"
if ((status == 1)) && has_out "B: 127.0.0.1:$port_b at $g_token" &&
	has_out "only in B: document:late#viewer@user:late" && ! has_out "later" &&
	has_out "schema: equal" && has_out "in both 22, only in A 0, only in B 1"; then
	ok "--to-consistency-token: B's data and schema as of that token"
else
	fail "--to-consistency-token: B's data and schema as of that token" "exit $status"
fi

# ------------------------------------------------------------ errors
expect_usage_error "verify needs --from-endpoint" "--from-endpoint is required" -- \
	verify --to-endpoint x
expect_usage_error "verify needs --to-endpoint" "--to-endpoint is required" -- \
	verify --from-endpoint x
expect_usage_error "--checks takes a count" "--checks: not a count" -- \
	verify --from-endpoint x --to-endpoint y --checks -3
expect_usage_error "--checks is bounded" "--checks: at most 1000000" -- \
	verify --from-endpoint x --to-endpoint y --checks 1000001
run verify --help
if ((status == 0)) && has_out "usage: pemba verify" && has_out "Exit status"; then
	ok "verify --help prints the usage"
else
	fail "verify --help prints the usage" "exit $status"
fi
# A port nothing listens on: a freshly closed one.
dead=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
verify "$port_a" a "$dead" b
if ((status == 2)) && has_err "side B (127.0.0.1:$dead)" && ! has_out "verify:"; then
	ok "an unreachable side B: exit 2 naming it"
else
	fail "an unreachable side B: exit 2 naming it" "exit $status"
fi
verify "$dead" a "$port_b" b
if ((status == 2)) && has_err "side A (127.0.0.1:$dead)"; then
	ok "an unreachable side A: exit 2 naming it"
else
	fail "an unreachable side A: exit 2 naming it" "exit $status"
fi
verify "$port_a" a "$port_b" b --from-consistency-token garbage
if ((status == 2)) && has_err "side A"; then
	ok "a malformed --from-consistency-token: exit 2 naming side A"
else
	fail "a malformed --from-consistency-token: exit 2 naming side A" "exit $status"
fi

# ------------------------------------------------------------ SpiceDB as either side
spicedb_case() {
	if ! start spicedb "$PEMBA_SPICEDB_FACADE" --grpc-addr 127.0.0.1:0 --token k; then
		if grep -q "libspicedb.so not found\|dlopen" "$work/spicedb.err" &&
			[[ "${PEMBA_DIFF_ALLOW_SKIP:-}" == 1 ]]; then
			echo "skipped: SpiceDB cases: $(cat "$work/spicedb.err")"
			return
		fi
		fail "spicedb_facade started" "$(cat "$work/spicedb.err")"
		return
	fi
	local sp=$port
	head -n 3000 "$work/rels.txt" >"$work/mid.txt"
	tail -n 600 "$work/rels.txt" >>"$work/mid.txt"
	# Caveat contexts: SpiceDB returns a Struct's keys in any order.
	echo "document:pub#viewer@user:*" >>"$work/mid.txt"
	for i in 1 2 3 4 5 6; do
		echo "document:c$i#viewer@user:cav$i[on_day:{\"hour\":$i,\"day\":\"tuesday\"}]"
	done >>"$work/mid.txt"
	for side in "$sp k" "$port_a e"; do
		read -r p t <<<"$side"
		on "$p" "$t" schema write "$work/schema.zed" >/dev/null 2>"$work/err" || setup_fail "schema write $p"
		on "$p" "$t" relationship import "$work/mid.txt" >/dev/null 2>"$work/err" || setup_fail "import $p"
	done
	verify "$port_a" e "$sp" k --checks 100
	if ((status == 0)) && has_out "verify: equal" && has_out "in both 3607, only in A 0, only in B 0" &&
		has_out "checks: 100 of 100 agree"; then
		ok "pemba (A) and SpiceDB (B) with equal data: exit 0"
	else
		fail "pemba (A) and SpiceDB (B) with equal data: exit 0" "exit $status"
	fi
	verify "$sp" k "$port_a" e --checks 100 --seed 3
	if ((status == 0)) && has_out "verify: equal" && has_out "lookups: 10 of 10 agree"; then
		ok "SpiceDB (A) and pemba (B) with equal data: exit 0"
	else
		fail "SpiceDB (A) and pemba (B) with equal data: exit 0" "exit $status"
	fi
	on "$sp" k relationship delete document:d17#viewer@user:u17 >/dev/null 2>"$work/err" || setup_fail "delete on SpiceDB"
	verify "$sp" k "$port_a" e --checks 10
	if ((status == 1)) && has_out "only in B: document:d17#viewer@user:u17" &&
		has_out "only in A 0, only in B 1"; then
		ok "SpiceDB (A) missing one relationship: exit 1 naming it"
	else
		fail "SpiceDB (A) missing one relationship: exit 1 naming it" "exit $status"
	fi
}
spicedb_case

echo "$passed passed, $failed failed"
((failed == 0))
