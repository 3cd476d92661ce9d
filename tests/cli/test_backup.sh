#!/usr/bin/env bash
# `pemba backup create|parse-revision|parse-schema|parse-relationships`
# against a real `pemba serve-testing` on 127.0.0.1: a round trip (schema,
# token, every relationship with caveats, contexts and expirations), `-`
# for stdout, refusing to overwrite, truncated / corrupt / foreign files
# refused with a byte position, and a backup SIGKILLed midway then rerun
# giving the same relationships as an uninterrupted one.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
server_pid=""
backup_pid=""
cleanup() {
	[[ -n "$backup_pid" ]] && kill -9 "$backup_pid" 2>/dev/null
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=client_expect.sh
source "$(dirname "$0")/client_expect.sh"

"$PEMBA_BINARY" serve-testing --grpc-addr 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
port=""
for _ in $(seq 100); do
	port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/server.err" "$work/server.out" | head -n 1)
	[[ -n "$port" ]] && break
	sleep 0.1
done
if [[ -z "$port" ]]; then
	echo "FAIL serve-testing did not report its port"
	echo "0 passed, 1 failed"
	exit 1
fi
conn=(--insecure --endpoint "127.0.0.1:$port" --token backup)

# pemba ARGS with the connection flags.
client() {
	"$PEMBA_BINARY" "$@" "${conn[@]}"
}

cat >"$work/schema.zed" <<'EOF'
use expiration

definition user {}

caveat has_level(level int, min int, tags list<string>) {
	level >= min && tags.size() >= 0
}

definition doc {
	relation viewer: user | user with has_level | user with expiration | doc#viewer | user:*
	permission view = viewer
}
EOF
client schema write "$work/schema.zed" >/dev/null 2>"$work/err" ||
	{ echo "FAIL schema write: $(cat "$work/err")"; exit 1; }
rels=(
	'doc:1#viewer@user:anne[has_level:{"min":3,"tags":["a","b"]}]'
	'doc:2#viewer@user:bob[has_level]'
	'doc:3#viewer@user:carl[expiration:2099-01-02T03:04:05Z]'
	'doc:4#viewer@doc:1#viewer'
	'doc:5#viewer@user:*'
)
for r in "${rels[@]}"; do
	client relationship create "$r" >/dev/null 2>"$work/err" ||
		{ echo "FAIL create $r: $(cat "$work/err")"; exit 1; }
done
token=$(client relationship create doc:6#viewer@user:dan 2>/dev/null)
client relationship read doc >"$work/read.txt" 2>/dev/null

# ---------------------------------------------------------- round trip
run backup create "$work/b.avro" "${conn[@]}"
if ((status == 0)) && [[ -s "$work/b.avro" && ! -e "$work/b.avro.lock" ]]; then
	ok "create writes the file and removes its lock"
else
	fail "create writes the file and removes its lock" "exit $status"
fi
if grep -q "backed up the schema and 6 relationships" "$work/err"; then
	ok "create reports the count on stderr"
else
	fail "create reports the count on stderr" "no summary"
fi
expect "parse-revision prints the zedtoken alone" 0 "$token" -- \
	backup parse-revision "$work/b.avro"
expect "parse-schema prints the schema" 0 "$(client schema read)" -- \
	backup parse-schema "$work/b.avro"
expect "parse-relationships prints every relationship as read does" 0 \
	"$(cat "$work/read.txt")" -- backup parse-relationships "$work/b.avro"
if grep -q -F 'doc:1#viewer@user:anne[has_level:{"min":3,"tags":["a","b"]}]' "$work/out" &&
	grep -q -F 'doc:3#viewer@user:carl[expiration:2099-01-02T03:04:05Z]' "$work/out"; then
	ok "caveat contexts and expirations survive"
else
	fail "caveat contexts and expirations survive" "missing"
fi
expect "parse-relationships reads standard input" 0 "$(cat "$work/read.txt")" -- \
	backup parse-relationships - <"$work/b.avro"

# The metadata key and the record names are zed's (visible in the header).
if grep -a -q -F 'com.authzed.spicedb.zedtoken.v1' "$work/b.avro" &&
	grep -a -q -F '"name":"com.authzed.spicedb.backup.relationship_v1"' "$work/b.avro" &&
	grep -a -q -F 'snappy' "$work/b.avro"; then
	ok "the header has zed's schema, codec and zedtoken key"
else
	fail "the header has zed's schema, codec and zedtoken key" "missing"
fi

# `-` writes to stdout.
"$PEMBA_BINARY" backup create - "${conn[@]}" >"$work/stdout.avro" 2>"$work/err"
status=$?
run backup parse-relationships "$work/stdout.avro"
if ((status == 0)) && [[ "$(cat "$work/out")" == "$(cat "$work/read.txt")" ]]; then
	ok "create - writes the backup to stdout"
else
	fail "create - writes the backup to stdout" "exit $status"
fi

expect_error "create never overwrites a complete backup" \
	"pemba: $work/b.avro already exists" -- backup create "$work/b.avro" "${conn[@]}"

# ------------------------------------------------------------- redact
run backup redact --print-redacted-object-ids "$work/b.avro" --redact-relations=true
cp "$work/out" "$work/map.txt"
# name KIND ORIGINAL: the redacted name from the printed map.
name() { awk -v k="$1" -v o="$2" '$1 == k && $2 == o { print $4 }' "$work/map.txt"; }
if ((status == 0)) && [[ -s "$work/b.avro.redacted" && "$(name definition doc)" == def* &&
	"$(name relation viewer)" == rel* && "$(name caveat has_level)" == cav* &&
	"$(name object-id anne)" == obj* ]]; then
	ok "redact writes FILE.redacted and prints the map"
else
	fail "redact writes FILE.redacted and prints the map" "exit $status"
fi
"$PEMBA_BINARY" backup parse-schema "$work/b.avro.redacted" >"$work/red.zed"
"$PEMBA_BINARY" backup parse-relationships "$work/b.avro.redacted" >"$work/red.txt"
if ! grep -q -E 'doc|user|viewer|anne|has_level' "$work/red.zed" "$work/red.txt" &&
	[[ $(wc -l <"$work/red.txt") -eq 6 ]] &&
	[[ "$("$PEMBA_BINARY" backup parse-revision "$work/b.avro.redacted")" == "$token" ]]; then
	ok "the redacted backup has no original names, all relationships, the token"
else
	fail "the redacted backup has no original names, all relationships, the token" "see files"
fi
# The redacted schema and relationships load into an empty datastore and
# answer as the original does, under the new names.
red_conn=(--insecure --endpoint "127.0.0.1:$port" --token redacted)
"$PEMBA_BINARY" schema write "$work/red.zed" "${red_conn[@]}" >/dev/null 2>&1
loaded=0
while read -r line; do
	"$PEMBA_BINARY" relationship create "$line" "${red_conn[@]}" >/dev/null 2>&1 && loaded=$((loaded + 1))
done <"$work/red.txt"
d=$(name definition doc) u=$(name definition user) v=$(name relation view)
check_both() { # RES_ID SUBJ_ID CONTEXT -> "orig/redacted" answers
	local a b
	a=$(client permission check "doc:$1" view "user:$2" --caveat-context "$3" 2>/dev/null)
	b=$("$PEMBA_BINARY" permission check "$d:$(name object-id "$1")" "$v" \
		"$u:$(name object-id "$2")" --caveat-context "$3" "${red_conn[@]}" 2>/dev/null)
	echo "$a/$b"
}
r1=$(check_both 4 anne '{"level":5}')
r2=$(check_both 4 anne '{"level":1}')
r3=$(check_both 3 carl '{}')
if ((loaded == 6)) && [[ "$r1" == "true/true" && "$r2" == "false/false" && "$r3" == "true/true" ]]; then
	ok "the redacted copy loads and keeps the permission structure"
else
	fail "the redacted copy loads and keeps the permission structure" "loaded $loaded: $r1 $r2 $r3"
fi
expect_error "redact never overwrites" "pemba: cannot create $work/b.avro.redacted" -- \
	backup redact "$work/b.avro"

# ------------------------------------------------ damaged and foreign files
size=$(stat -c %s "$work/b.avro")
for cut in 2 40 $((size / 2)) $((size - 20)) $((size - 1)); do
	head -c "$cut" "$work/b.avro" >"$work/cut.avro"
	run backup parse-relationships "$work/cut.avro"
	if ((status == 2)) && grep -q -E '(truncated|corrupt).*byte [0-9]+' "$work/err"; then
		ok "a file cut at byte $cut is refused with a position"
	else
		fail "a file cut at byte $cut is refused with a position" "exit $status"
	fi
done
# Flip one byte inside the last block's data (before its sync marker).
cp "$work/b.avro" "$work/flip.avro"
pos=$((size - 24))
orig=$(od -An -tu1 -j "$pos" -N1 "$work/flip.avro" | tr -d ' ')
printf "$(printf '\\%03o' $(((orig ^ 0x55) & 0xff)))" |
	dd of="$work/flip.avro" bs=1 seek="$pos" conv=notrunc status=none
run backup parse-relationships "$work/flip.avro"
if ((status == 2)) && grep -q -E 'corrupt: .*byte [0-9]+' "$work/err"; then
	ok "a flipped byte is refused with the block's position"
else
	fail "a flipped byte is refused with the block's position" "exit $status"
fi
# A flipped byte in the sync marker at the end of the file.
cp "$work/b.avro" "$work/flip2.avro"
printf 'X' | dd of="$work/flip2.avro" bs=1 seek=$((size - 3)) conv=notrunc status=none
run backup parse-relationships "$work/flip2.avro"
if ((status == 2)) && grep -q -E 'sync marker at byte [0-9]+' "$work/err"; then
	ok "a damaged sync marker is refused with its position"
else
	fail "a damaged sync marker is refused with its position" "exit $status"
fi
cp "$work/schema.zed" "$work/notbackup"
expect_error "a file that is not a backup is refused" \
	"pemba: $work/notbackup: not a zed backup: no Avro object container magic" -- \
	backup parse-schema "$work/notbackup"
expect_error "a missing file is refused" "pemba: cannot open $work/nope" -- \
	backup parse-revision "$work/nope"

# ---------------------------------------------- SIGKILL midway, then rerun
for i in $(seq 1 120); do
	client relationship create "doc:k$i#viewer@user:u$i" >/dev/null 2>&1
done
"$PEMBA_BINARY" backup create "$work/full.avro" --page-limit 3 "${conn[@]}" 2>/dev/null
"$PEMBA_BINARY" backup parse-relationships "$work/full.avro" >"$work/full.txt" 2>&1
PEMBA_TEST_BACKUP_PAGE_DELAY_MS=30 "$PEMBA_BINARY" backup create "$work/k.avro" \
	--page-limit 3 "${conn[@]}" >/dev/null 2>&1 &
backup_pid=$!
for _ in $(seq 300); do
	count=$(sed -n 's/^count //p' "$work/k.avro.lock" 2>/dev/null)
	[[ -n "$count" ]] && ((count >= 40)) && break
	sleep 0.02
done
kill -9 "$backup_pid" 2>/dev/null
wait "$backup_pid" 2>/dev/null
backup_pid=""
# Garbage after the recorded pages (a block half written when killed).
printf 'half a block' >>"$work/k.avro"
# A write after the kill: the resumed backup stays at its revision.
client relationship create doc:late#viewer@user:late >/dev/null 2>&1
if [[ -e "$work/k.avro.lock" ]] && ((count >= 40 && count < 126)); then
	ok "a killed backup leaves its lock ($count relationships recorded)"
else
	fail "a killed backup leaves its lock" "count ${count:-none}"
fi
run backup create "$work/k.avro" --page-limit 3 "${conn[@]}"
if ((status == 0)) && grep -q "(resumed)" "$work/err" && [[ ! -e "$work/k.avro.lock" ]]; then
	ok "rerunning resumes the killed backup"
else
	fail "rerunning resumes the killed backup" "exit $status"
fi
"$PEMBA_BINARY" backup parse-relationships "$work/k.avro" >"$work/k.txt" 2>&1
if [[ "$(wc -l <"$work/full.txt")" -eq 126 ]] && cmp -s "$work/full.txt" "$work/k.txt"; then
	ok "the resumed backup equals an uninterrupted one (126, no duplicates)"
else
	fail "the resumed backup equals an uninterrupted one" \
		"$(wc -l <"$work/full.txt") vs $(wc -l <"$work/k.txt") lines"
fi
if [[ "$("$PEMBA_BINARY" backup parse-revision "$work/k.avro")" == \
	"$("$PEMBA_BINARY" backup parse-revision "$work/full.avro")" ]]; then
	ok "the resumed backup keeps its revision"
else
	fail "the resumed backup keeps its revision" "tokens differ"
fi

# ------------------------- servers without ExportBulkRelationships
# PEMBA_TEST_BACKUP_NO_EXPORT makes create take the path it takes when the
# server answers UNIMPLEMENTED: ReadRelationships per definition.
PEMBA_TEST_BACKUP_NO_EXPORT=1 "$PEMBA_BINARY" backup create "$work/r.avro" \
	--page-limit 7 "${conn[@]}" 2>"$work/err"
status=$?
"$PEMBA_BINARY" backup parse-relationships "$work/r.avro" | sort >"$work/r.txt"
# (127 relationships now: doc:late was written after the kill above.)
"$PEMBA_BINARY" backup create "$work/now.avro" "${conn[@]}" 2>/dev/null
"$PEMBA_BINARY" backup parse-relationships "$work/now.avro" | sort >"$work/now.sorted"
if ((status == 0)) && [[ $(wc -l <"$work/now.sorted") -eq 127 ]] &&
	cmp -s "$work/now.sorted" "$work/r.txt"; then
	ok "without export, ReadRelationships per definition backs up the same"
else
	fail "without export, ReadRelationships per definition backs up the same" "exit $status"
fi
PEMBA_TEST_BACKUP_NO_EXPORT=1 PEMBA_TEST_BACKUP_PAGE_DELAY_MS=30 \
	"$PEMBA_BINARY" backup create "$work/rk.avro" --page-limit 3 "${conn[@]}" >/dev/null 2>&1 &
backup_pid=$!
count=""
for _ in $(seq 300); do
	count=$(sed -n 's/^count //p' "$work/rk.avro.lock" 2>/dev/null)
	[[ -n "$count" ]] && ((count >= 40)) && break
	sleep 0.02
done
kill -9 "$backup_pid" 2>/dev/null
wait "$backup_pid" 2>/dev/null
backup_pid=""
grep -q '^source read' "$work/rk.avro.lock" 2>/dev/null && lock_ok=1 || lock_ok=0
PEMBA_TEST_BACKUP_NO_EXPORT=1 "$PEMBA_BINARY" backup create "$work/rk.avro" \
	--page-limit 3 "${conn[@]}" >/dev/null 2>"$work/err"
status=$?
"$PEMBA_BINARY" backup parse-relationships "$work/rk.avro" | sort >"$work/rk.txt"
if ((status == 0 && lock_ok)) && grep -q "(resumed)" "$work/err" &&
	cmp -s "$work/now.sorted" "$work/rk.txt"; then
	ok "a killed ReadRelationships backup resumes to the same contents"
else
	fail "a killed ReadRelationships backup resumes to the same contents" \
		"exit $status lock_ok $lock_ok"
fi

# ------------------------------------------------------------- restore
rconn=(--insecure --endpoint "127.0.0.1:$port" --token restored)
run backup restore "$work/b.avro" "${rconn[@]}"
"$PEMBA_BINARY" relationship read doc "${rconn[@]}" >"$work/restored.txt" 2>&1
"$PEMBA_BINARY" schema read "${rconn[@]}" >"$work/restored.zed" 2>&1
if ((status == 0)) && [[ ! -e "$work/b.avro.restore" ]] &&
	cmp -s "$work/read.txt" "$work/restored.txt" &&
	[[ "$(cat "$work/restored.zed")" == "$(client schema read)" ]]; then
	ok "restore into an empty datastore gives the same schema and relationships"
else
	fail "restore into an empty datastore gives the same schema and relationships" "exit $status"
fi
run backup restore "$work/b.avro" "${rconn[@]}"
if ((status == 2)) && grep -q "ALREADY_EXISTS" "$work/err" && [[ -e "$work/b.avro.restore" ]]; then
	ok "restore over existing relationships fails by default and stays incomplete"
else
	fail "restore over existing relationships fails by default and stays incomplete" "exit $status"
fi
expect_error "a restore state file needs --resume" "pemba: a restore of $work/b.avro was interrupted" -- \
	backup restore "$work/b.avro" "${rconn[@]}"
rm -f "$work/b.avro.restore"
run backup restore "$work/b.avro" --conflict-strategy touch "${rconn[@]}"
if ((status == 0)) && [[ ! -e "$work/b.avro.restore" ]]; then
	ok "--conflict-strategy touch writes over existing relationships"
else
	fail "--conflict-strategy touch writes over existing relationships" "exit $status"
fi
run backup restore "$work/b.avro" --conflict-strategy skip "${rconn[@]}"
if ((status == 0)) && grep -q "6 already existed and were skipped" "$work/err"; then
	ok "--conflict-strategy skip leaves existing relationships"
else
	fail "--conflict-strategy skip leaves existing relationships" "exit $status"
fi
# Killed midway, then --resume: the same relationships, none twice.
kconn=(--insecure --endpoint "127.0.0.1:$port" --token restorekill)
PEMBA_TEST_BACKUP_PAGE_DELAY_MS=30 "$PEMBA_BINARY" backup restore "$work/full.avro" \
	--batch-size 2 --batches-per-transaction 2 "${kconn[@]}" >/dev/null 2>&1 &
backup_pid=$!
committed=""
for _ in $(seq 300); do
	committed=$(sed -n 's/^committed //p' "$work/full.avro.restore" 2>/dev/null)
	[[ -n "$committed" ]] && ((committed >= 40)) && break
	sleep 0.02
done
kill -9 "$backup_pid" 2>/dev/null
wait "$backup_pid" 2>/dev/null
backup_pid=""
run backup restore "$work/full.avro" --batch-size 2 --batches-per-transaction 2 --resume "${kconn[@]}"
"$PEMBA_BINARY" relationship read doc "${kconn[@]}" | sort >"$work/rk_restored.txt"
sort "$work/full.txt" >"$work/full.sorted"
if ((status == 0)) && [[ -n "$committed" ]] && ((committed >= 40 && committed < 126)) &&
	[[ ! -e "$work/full.avro.restore" ]] && cmp -s "$work/full.sorted" "$work/rk_restored.txt"; then
	ok "a killed restore resumes with --resume to the same relationships ($committed before the kill)"
else
	fail "a killed restore resumes with --resume to the same relationships" \
		"exit $status committed ${committed:-none}"
fi
# The server dies midway (SIGKILL) and comes back on the same port: the
# restore retries the transaction, reconnecting, and completes without a
# gap or a duplicate.
start_file_server() { # PORT: `pemba serve` on $work/retry.db; sets rpid
	"$PEMBA_BINARY" serve --grpc-addr "127.0.0.1:$1" --preshared-key rk \
		--datastore "sqlite://$work/retry.db" >"$work/rs.out" 2>"$work/rs.err" &
	rpid=$!
}
start_file_server 0
rport=""
for _ in $(seq 100); do
	rport=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/rs.err" "$work/rs.out" | head -n 1)
	[[ -n "$rport" ]] && break
	sleep 0.1
done
retry_conn=(--insecure --endpoint "127.0.0.1:$rport" --token rk)
PEMBA_TEST_BACKUP_PAGE_DELAY_MS=30 "$PEMBA_BINARY" backup restore "$work/full.avro" \
	--batch-size 2 --batches-per-transaction 2 "${retry_conn[@]}" >/dev/null 2>"$work/retry.err" &
backup_pid=$!
committed=""
for _ in $(seq 300); do
	committed=$(sed -n 's/^committed //p' "$work/full.avro.restore" 2>/dev/null)
	[[ -n "$committed" ]] && ((committed >= 40)) && break
	sleep 0.02
done
kill -9 "$rpid" 2>/dev/null
wait "$rpid" 2>/dev/null
sleep 0.5
start_file_server "$rport"
wait "$backup_pid"
status=$?
backup_pid=""
"$PEMBA_BINARY" relationship read doc "${retry_conn[@]}" | sort >"$work/retry_restored.txt"
kill "$rpid" 2>/dev/null
wait "$rpid" 2>/dev/null
if ((status == 0)) && grep -q "retrying in" "$work/retry.err" &&
	[[ ! -e "$work/full.avro.restore" ]] && cmp -s "$work/full.sorted" "$work/retry_restored.txt"; then
	ok "a restore retries through a server restart and completes ($committed before it)"
else
	fail "a restore retries through a server restart and completes" \
		"exit $status committed ${committed:-none}: $(tail -3 "$work/retry.err")"
fi
expect_usage_error "a bad --request-timeout" "--request-timeout" -- \
	backup restore "$work/full.avro" --request-timeout soon

head -c $(($(stat -c %s "$work/full.avro") - 30)) "$work/full.avro" >"$work/cutr.avro"
run backup restore "$work/cutr.avro" --insecure --endpoint "127.0.0.1:$port" --token restorecut
if ((status == 2)) && grep -q -E 'truncated: .*byte [0-9]+.*incomplete' "$work/err" &&
	[[ -e "$work/cutr.avro.restore" ]]; then
	ok "a truncated backup's restore fails with the position and stays incomplete"
else
	fail "a truncated backup's restore fails with the position and stays incomplete" "exit $status"
fi

# ------------------------------- --prefix-filter, --prefix-replacements
pconn=(--insecure --endpoint "127.0.0.1:$port" --token prefixes)
printf '%s\n' 'definition app/user {}' '' 'definition app/doc {' '	relation viewer: app/user' '}' '' \
	'definition other/thing {' '	relation owner: app/user' '}' >"$work/prefixed.zed"
"$PEMBA_BINARY" schema write "$work/prefixed.zed" "${pconn[@]}" >/dev/null 2>&1
for r in app/doc:1#viewer@app/user:a app/doc:2#viewer@app/user:b other/thing:1#owner@app/user:a; do
	"$PEMBA_BINARY" relationship create "$r" "${pconn[@]}" >/dev/null 2>&1
done
run backup create "$work/p.avro" --prefix-filter app "${pconn[@]}"
"$PEMBA_BINARY" backup parse-schema "$work/p.avro" >"$work/p.zed"
"$PEMBA_BINARY" backup parse-relationships "$work/p.avro" >"$work/p.txt"
if ((status == 0)) && ! grep -q other "$work/p.zed" "$work/p.txt" &&
	grep -q 'definition app/doc' "$work/p.zed" && [[ $(wc -l <"$work/p.txt") -eq 2 ]]; then
	ok "create --prefix-filter keeps only that prefix's definitions and relationships"
else
	fail "create --prefix-filter keeps only that prefix's definitions and relationships" "exit $status"
fi
"$PEMBA_BINARY" backup create "$work/pall.avro" "${pconn[@]}" 2>/dev/null
expect "parse-relationships --prefix-replacements renames the prefix" 0 \
	"new/doc:1#viewer@new/user:a
new/doc:2#viewer@new/user:b" -- \
	backup parse-relationships "$work/pall.avro" --prefix-filter app --prefix-replacements app=new
run backup parse-schema "$work/pall.avro" --prefix-replacements app=,other=xyz
if ((status == 0)) && grep -q '^definition doc {' "$work/out" && grep -q '^definition xyz/thing {' "$work/out" &&
	grep -q 'relation owner: user' "$work/out"; then
	ok "parse-schema --prefix-replacements renames and removes prefixes"
else
	fail "parse-schema --prefix-replacements renames and removes prefixes" "exit $status"
fi
p2conn=(--insecure --endpoint "127.0.0.1:$port" --token prefixes2)
run backup restore "$work/pall.avro" --prefix-replacements app=new,other=new2 "${p2conn[@]}"
expect "restore --prefix-replacements writes the renamed schema and relationships" 0 \
	"new/doc:1#viewer@new/user:a
new/doc:2#viewer@new/user:b" -- relationship read new/doc "${p2conn[@]}"
expect_error "a malformed --prefix-replacements" "pemba: --prefix-replacements takes old=new" -- \
	backup parse-schema "$work/pall.avro" --prefix-replacements nope

# ---------------------------------------------------------------- usage
run backup create --help
if ((status == 0)) && grep -q "^usage: pemba backup create" "$work/out"; then
	ok "create --help"
else
	fail "create --help" "exit $status"
fi
expect_usage_error "create needs a file" "" -- backup create
expect_usage_error "a bad --page-limit" "--page-limit" -- \
	backup create "$work/x.avro" --page-limit x
run backup
if ((status == 2)) && grep -q "parse-relationships" "$work/err"; then
	ok "backup without a subcommand lists them"
else
	fail "backup without a subcommand lists them" "exit $status"
fi

echo "$passed passed, $failed failed"
((failed == 0))
