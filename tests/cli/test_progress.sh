#!/usr/bin/env bash
# Progress lines of the long commands (src/cli/progress.c): on a terminal
# (a pty from `script`) stderr gets a line redrawn with \r and a final
# "... N relationships, R/s in T" line; without a terminal nothing but
# the commands' usual summaries; PEMBA_PROGRESS=1 / =0 force it on / off.
# Covers relationship import, export and bulk-delete, backup create and
# mirror's snapshot copy.  Skips (exit 0 with a note) without `script`.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
server_pid=""
cleanup() {
	[[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
source "$(dirname "$0")/client_expect.sh"
export XDG_CONFIG_HOME="$work/config" PEMBA_TOKEN=progress
unset PEMBA_PROGRESS

start_serve_testing
printf 'definition user {}\ndefinition document {\n\trelation viewer: user\n}\n' >"$work/schema.zed"
run schema write "$work/schema.zed" --insecure
check "schema" eval '((status == 0))'
for i in $(seq 3000); do echo "document:$i#viewer@user:u$i"; done >"$work/rels.txt"

# on_tty NAME COMMAND: runs pemba COMMAND on a pty; its output in $work/tty.
on_tty() {
	script -qec "$PEMBA_BINARY $1" /dev/null >"$work/tty" 2>&1 </dev/null
}

if command -v script >/dev/null; then
	on_tty "relationship import $work/rels.txt --insecure"
	check "import on a terminal: redrawn line and final count" eval \
		'grep -q $'"'"'\rpemba: imported 3000 relationships, [0-9]*/s in [0-9.]*s'"'"' "$work/tty" && grep -q "imported 3000 relationships in 1 transaction" "$work/tty"'
	on_tty "relationship export --insecure --output $work/export.txt"
	check "export on a terminal" eval 'grep -q "pemba: exported 3000 relationships, [0-9]*/s in" "$work/tty"'
	on_tty "backup create $work/b.zb --insecure"
	check "backup create on a terminal" eval 'grep -q "pemba: backed up 3000 relationships, [0-9]*/s in" "$work/tty"'
	on_tty "relationship bulk-delete document --insecure --yes"
	check "bulk-delete on a terminal" eval 'grep -q "pemba: deleted 3000 relationships, [0-9]*/s in" "$work/tty"'
	PEMBA_PROGRESS=0 on_tty "relationship import $work/rels.txt --insecure"
	check "PEMBA_PROGRESS=0: none on a terminal" eval \
		'! grep -q "/s in" "$work/tty" && grep -q "imported 3000 relationships in 1 transaction" "$work/tty"'
else
	echo "note: no script command; the terminal cases are skipped"
	run relationship import "$work/rels.txt" --insecure
fi

# Not a terminal: no progress line, no carriage return.
run relationship export --insecure --output "$work/export2.txt"
check "export without a terminal: quiet" eval '((status == 0)) && ! grep -q $'"'"'\r'"'"' "$work/err" && ! has_err "/s"'
run backup create "$work/b2.zb" --insecure
check "backup create without a terminal: quiet" eval '((status == 0)) && ! grep -q $'"'"'\r'"'"' "$work/err" && has_err "backed up the schema and 3000"'
PEMBA_PROGRESS=1 run relationship export --insecure --output "$work/export3.txt"
check "PEMBA_PROGRESS=1 forces it" eval '((status == 0)) && has_err "exported 3000 relationships, "'

# mirror's snapshot copy, token "progress" to token "progress-copy" on the
# same serve-testing (two isolated datastores).
run relationship import "$work/rels.txt" --insecure --touch
mirror_args=(mirror --from-endpoint "$PEMBA_ENDPOINT" --to-endpoint "$PEMBA_ENDPOINT"
	--from-token progress --to-token progress-copy --insecure --until-caught-up)
PEMBA_PROGRESS=1 run "${mirror_args[@]}" --state-file "$work/m1.state"
check "mirror: progress line for the snapshot copy" eval \
	'((status == 0)) && has_err "pemba: mirror: copied 3000 relationships, " && has_err "snapshot copied (3000 relationships)"'
run "${mirror_args[@]}" --to-token progress-copy2 --state-file "$work/m2.state"
check "mirror without a terminal: no progress line" eval \
	'((status == 0)) && ! has_err "mirror: copied" && has_err "snapshot copied (3000 relationships)"'

echo "$passed passed, $failed failed"
((failed == 0))
