# Shared by test_postgres_move.sh and test_postgres_mirror.sh (sourced
# after client_expect.sh and pg_expect.sh, with the cluster started):
# servers by name, seeding, writes, comparing two servers, a mirror run
# and the token checks after it.
# shellcheck shell=bash


# server NAME URI: starts one; sets ${NAME} (an array of connection flags)
# and ${NAME}_port.
server() {
	pg_serve "$1" "$2"
	eval "$1=(--insecure --endpoint 127.0.0.1:$serve_port)"
	eval "$1_port=$serve_port"
}
# on NAME ARGS...: pemba ARGS against server NAME (stdout, stderr as is).
on() {
	local -n conn=$1
	shift
	"$PEMBA_BINARY" "$@" "${conn[@]}"
}
# same NAME_A NAME_B WHAT: ok when export and schema read are equal.
same() {
	on "$1" relationship export 2>/dev/null | sort >"$work/$1.txt"
	on "$2" relationship export 2>/dev/null | sort >"$work/$2.txt"
	on "$1" schema read >"$work/$1.zed" 2>&1
	on "$2" schema read >"$work/$2.zed" 2>&1
	if [[ -s "$work/$1.txt" ]] && cmp -s "$work/$1.txt" "$work/$2.txt" &&
		cmp -s "$work/$1.zed" "$work/$2.zed"; then
		ok "$3: relationships ($(wc -l <"$work/$1.txt")) and schema equal"
	else
		fail "$3: relationships and schema equal" \
			"$(diff "$work/$1.txt" "$work/$2.txt" | head -10; diff "$work/$1.zed" "$work/$2.zed" | head -5)"
	fi
}

cat >"$work/schema.zed" <<'EOF'
use expiration

definition user {}

caveat has_level(level int, min int) {
	level >= min
}

definition doc {
	relation viewer: user | user with has_level | user with expiration | doc#viewer | user:*
	relation editor: user
	permission view = viewer + editor
}
EOF
{
	echo 'doc:1#viewer@user:anne[has_level:{"min":3}]'
	echo 'doc:2#viewer@user:bob[has_level]'
	echo 'doc:3#viewer@user:carl[expiration:2099-01-02T03:04:05Z]'
	echo 'doc:4#viewer@doc:1#viewer'
	echo 'doc:5#viewer@user:*'
	for i in $(seq 1 600); do echo "doc:s$i#viewer@user:u$i"; done
} >"$work/seed.txt"
# seed NAME: the schema and the relationships above.
seed() {
	on "$1" schema write "$work/schema.zed" >/dev/null 2>"$work/err" &&
		on "$1" relationship import "$work/seed.txt" >/dev/null 2>>"$work/err" ||
		{ echo "FAIL seed $1: $(cat "$work/err")"; echo "$passed passed, $((failed + 1)) failed"; exit 1; }
}
# writes NAME FROM TO: creates, touches with a caveat, deletes.
writes() {
	local i
	for ((i = $2; i <= $3; i++)); do
		on "$1" relationship create "doc:w$i#viewer@user:x$i" >/dev/null || return 1
		on "$1" relationship touch "doc:w$i#viewer@user:x$i[has_level:{\"min\":$i}]" >/dev/null || return 1
		if ((i % 3 == 0)); then on "$1" relationship delete "doc:s$i#viewer@user:u$i" >/dev/null || return 1; fi
	done
}


mirror_run() {
	local state=$1 from=$2 to=$3 src=$4
	pre_token=$(on "$src" relationship create "doc:pre#viewer@user:pre" 2>/dev/null)
	on "$src" relationship create "doc:pre2#viewer@user:pre" >/dev/null 2>&1
	local m=(mirror --insecure --from-endpoint "127.0.0.1:$from" --to-endpoint "127.0.0.1:$to"
		--state-file "$work/$state")
	"$PEMBA_BINARY" "${m[@]}" 2>"$work/$state.err1" &
	mirror_pid=$!
	local _ watching=0
	for _ in $(seq 300); do
		grep -q '^phase watch' "$work/$state" 2>/dev/null && { watching=1; break; }
		sleep 0.1
	done
	check "$state: the mirror copies the snapshot and follows Watch" test "$watching" = 1
	mid_token=$(on "$src" relationship create "doc:tok#viewer@user:tok" 2>/dev/null)
	mid_token2=$(on "$src" relationship delete "doc:tok#viewer@user:tok" 2>/dev/null)
	writes "$src" 11 16 || fail "$state: writes during the mirror" "a write failed"
	sed 's/permission view = viewer + editor/relation owner: user\n\tpermission view = viewer + editor + owner/' \
		"$work/schema.zed" >"$work/schema2.zed"
	on "$src" schema write "$work/schema2.zed" >/dev/null 2>&1 || fail "$state: schema change" "refused"
	on "$src" relationship create "doc:1#owner@user:olga" >/dev/null 2>&1
	on "$src" relationship create 'doc:7#viewer@user:eve[expiration:2098-05-06T07:08:09Z]' >/dev/null
	sleep 0.5
	kill -9 "$mirror_pid" 2>/dev/null
	wait "$mirror_pid" 2>/dev/null
	mirror_pid=""
	writes "$src" 17 18 || fail "$state: writes while the mirror is down" "a write failed"
	on "$src" admin read-only on >/dev/null 2>&1
	timeout 90 "$PEMBA_BINARY" "${m[@]}" --until-caught-up >"$work/out" 2>"$work/err"
	status=$?
	check "$state: after a SIGKILL, --until-caught-up exits 0" exit_is 0
	check "$state: it says it caught up" has_err "caught up at"
}
# tokens_honoured SRC DST WHAT: the source's mid-move tokens on the target.
tokens_honoured() {
	local a b c
	a=$(on "$2" permission check doc:tok view user:tok --consistency-at-exact "$mid_token" 2>&1)
	b=$(on "$2" permission check doc:tok view user:tok --consistency-at-exact "$mid_token2" 2>&1)
	c=$(on "$2" permission check doc:tok view user:tok --consistency-at-least "$mid_token" 2>&1)
	if [[ -n "$mid_token" && "$a" == true && "$b" == false && "$c" == false ]]; then
		ok "$3: the source's tokens give the source's answers on the target"
	else
		fail "$3: the source's tokens give the source's answers on the target" "$a / $b / $c"
	fi
	a=$(on "$2" permission check doc:pre view user:pre --consistency-at-least "$pre_token" 2>&1)
	b=$(on "$2" permission check doc:pre view user:pre --consistency-at-exact "$pre_token" 2>&1)
	if [[ "$a" == true && "$b" == *"from before the move"*"use at_least_as_fresh" ]]; then
		ok "$3: a token from before the move: at_least accepted, at_exact refused saying why"
	else
		fail "$3: a token from before the move: at_least accepted, at_exact refused saying why" "$a / $b"
	fi
	a=$(on "$2" permission check doc:1 view user:olga 2>&1)
	if [[ "$a" == true ]] && grep -q "relation owner" "$work/$2.zed"; then
		ok "$3: the schema changed during the move is the target's"
	else
		fail "$3: the schema changed during the move is the target's" "$a"
	fi
}

