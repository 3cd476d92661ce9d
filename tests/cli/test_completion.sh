#!/usr/bin/env bash
# `pemba completion bash|zsh`: the bash script is sourced and its function
# called with COMP_WORDS/COMP_CWORD as bash would, for commands,
# subcommands, flags (the connection flags, --context, a command's own)
# and words after a subcommand; every command of `pemba --help` is offered;
# the zsh script loads bashcompinit and parses.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/client_expect.sh"

run completion bash
cp "$work/out" "$work/pemba.bash"
check "completion bash: exit 0, a complete line" eval '((status == 0)) && grep -q "^complete -F _pemba_complete pemba$" "$work/pemba.bash"'
check "completion bash: valid bash" bash -n "$work/pemba.bash"

# complete WORD...: the candidates for the last word, space-separated.
complete_words() {
	bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _pemba_complete; echo "${COMPREPLY[*]}"' _ "$work/pemba.bash" "$@"
}
# expect_completion NAME WANT WORD...: the candidates are exactly WANT.
expect_completion() {
	local name=$1 want=$2 got
	shift 2
	got=$(complete_words "$@")
	if [[ "$got" == "$want" ]]; then ok "$name"; else
		failed=$((failed + 1))
		echo "FAIL $name: got '$got', want '$want'"
	fi
}
# expect_completion_has NAME WORD CANDIDATE...: WORD is among them.
expect_completion_has() {
	local name=$1 want=$2 got
	shift 2
	got=" $(complete_words "$@") "
	if [[ "$got" == *" $want "* ]]; then ok "$name"; else
		failed=$((failed + 1))
		echo "FAIL $name: '$want' not in '$got'"
	fi
}

expect_completion "command prefix" "schema" pemba sch
expect_completion "two commands share a prefix" "relationship relation" pemba relati
expect_completion "subcommands" "read write diff plan apply" pemba schema ""
expect_completion "a subcommand's flag" "--endpoint" pemba schema read --end
expect_completion_has "--context on client commands" "--context" pemba relationship read document --con
expect_completion_has "--consistency flags on reads" "--consistency-full" pemba permission check --consistency-
expect_completion_has "--caveat-context" "--caveat-context" pemba permission check --cav
expect_completion "words after a subcommand" "status up head down" pemba datastore migrate ""
expect_completion "admin read-only" "on off status" pemba admin read-only ""
expect_completion_has "a datastore subcommand's flag" "--window" pemba datastore gc --w
expect_completion_has "serve flags" "--grpc-addr" pemba serve --grpc
expect_completion "context subcommands" "set use list remove current" pemba context ""
expect_completion "completion shells" "bash zsh" pemba completion ""
expect_completion_has "help COMMAND" "backup" pemba help ba
expect_completion_has "a file name where an argument goes" "$work/pemba.bash" pemba validate "$work/pemba"

# Context names come from the contexts file (COMP_WORDS[0] is the binary
# the completion runs).
export XDG_CONFIG_HOME="$work/config"
"$PEMBA_BINARY" context set alpha 127.0.0.1:1 secret-token --insecure >/dev/null
"$PEMBA_BINARY" context set beta 127.0.0.1:2 --insecure >/dev/null
expect_completion "context use NAME" "alpha beta" "$PEMBA_BINARY" context use ""
expect_completion "--context NAME" "beta" "$PEMBA_BINARY" schema read --context b
check "no token in the candidates" eval '[[ "$(complete_words "$PEMBA_BINARY" context remove "")" != *secret* ]]'

# Every command `pemba --help` lists is offered.
run --help
all=1
for c in $(sed -n 's/^  \([a-z][a-z-]*\) .*/\1/p' "$work/out"); do
	[[ " $(complete_words pemba "") " == *" $c "* ]] || { all=0; echo "    missing: $c"; }
done
check "every command is offered" eval '((all == 1))'

run completion zsh
check "completion zsh: bashcompinit and the same function" eval \
	'((status == 0)) && has_out "bashcompinit" && has_out "_pemba_complete()" && head -n 1 "$work/out" | grep -q "^#compdef pemba"'
cp "$work/out" "$work/pemba.zsh"
check "completion zsh: parses" bash -n "$work/pemba.zsh"
if command -v zsh >/dev/null; then
	check "completion zsh: loads in zsh" zsh -c "source $work/pemba.zsh"
fi
run completion fish
check "completion fish: usage error" eval '((status == 2)) && has_err "bash or zsh"'

echo "$passed passed, $failed failed"
((failed == 0))
