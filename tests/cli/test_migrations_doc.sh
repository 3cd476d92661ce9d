#!/usr/bin/env bash
# Runs docs/migrations.md: every ```sh block of the page, in order, against
# the servers the page starts, with the files the page embeds, so that the
# recipes in it cannot drift from what pemba does.
#
# The page's conventions (docs/migrations.md, "Reading and running this
# page", says the same for its readers):
#   ```zed file=NAME / ```text file=NAME   a file, written to the working
#                                            directory before any block runs
#   ```sh server     one `pemba serve...` (or `pemba proxy ... --listen`)
#                    command per line; started in the background with its
#                    127.0.0.1:PORT replaced by a free port, which then
#                    replaces 127.0.0.1:PORT in later blocks and server lines
#   ```sh            a script run with `set -e -o pipefail`: every command
#                    must succeed
#   # expect output: S   (any number, in any block) the block's stdout+stderr
#                        contains S
#   # expect failure: S  the block's last command fails (exit status not 0)
#                        and the output contains S; the block runs without -e
#   # expect exit N: S   the same, with exactly exit status N
# Variables named PEMBA_* that a block exports are kept for the next blocks;
# every block runs in the same working directory.  Other fences (```text
# without file=, ```console, ...) are prose.
#
# Prints one line per block (ok/FAIL) and `N passed, M failed`; exits 1 when
# any block failed, so ctest fails with it.
set -uo pipefail

: "${PEMBA_BINARY:?set PEMBA_BINARY to the pemba binary}"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
doc=${PEMBA_MIGRATIONS_DOC:-$here/../../docs/migrations.md}
if [[ ! -f "$doc" ]]; then
	echo "FAIL no $doc"
	echo "0 passed, 1 failed"
	exit 1
fi

work=$(mktemp -d)
run_dir="$work/run"
mkdir -p "$run_dir" "$work/blocks" "$work/bin" "$work/servers"
server_pids=()
cleanup() {
	local pid
	for pid in "${server_pids[@]}"; do
		kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	done
	rm -rf "$work"
}
trap cleanup EXIT

# The page says `pemba`; make that the binary under test.
binary=$(cd "$(dirname "$PEMBA_BINARY")" && pwd)/$(basename "$PEMBA_BINARY")
ln -s "$binary" "$work/bin/pemba"
export PATH="$work/bin:$PATH"
# Only what the page exports may reach the commands.
unset PEMBA_ENDPOINT PEMBA_TOKEN
: >"$work/env"

passed=0
failed=0
ok() {
	passed=$((passed + 1))
	echo "ok   $1"
}
fail() {
	failed=$((failed + 1))
	echo "FAIL $1: $2"
	[[ -f "$work/out" ]] && sed 's/^/    | /' "$work/out"
}

# --- split the page ---------------------------------------------------------
#
# Blocks go to $work/blocks/NNN.{sh,server} with their first line number in
# NNN.line; files go straight to the working directory.

nblocks=0
in_fence=""
target=""
lineno=0
while IFS= read -r line || [[ -n "$line" ]]; do
	lineno=$((lineno + 1))
	if [[ -z "$in_fence" ]]; then
		[[ "$line" =~ ^\`\`\`([a-z]*)[[:space:]]*(.*)$ ]] || continue
		lang=${BASH_REMATCH[1]}
		info=${BASH_REMATCH[2]}
		in_fence=prose
		if [[ "$info" =~ ^file=([A-Za-z0-9._-]+)$ ]]; then
			target="$run_dir/${BASH_REMATCH[1]}"
			if [[ -e "$target" ]]; then
				fail "line $lineno" "file ${BASH_REMATCH[1]} is embedded twice"
			fi
			: >"$target"
			in_fence="file"
		elif [[ "$lang" == sh && -z "$info" ]]; then
			nblocks=$((nblocks + 1))
			target=$(printf '%s/blocks/%03d.sh' "$work" "$nblocks")
			echo "$lineno" >"${target%.sh}.line"
			: >"$target"
			in_fence=block
		elif [[ "$lang" == sh && "$info" == server ]]; then
			nblocks=$((nblocks + 1))
			target=$(printf '%s/blocks/%03d.server' "$work" "$nblocks")
			echo "$lineno" >"${target%.server}.line"
			: >"$target"
			in_fence=block
		fi
		continue
	fi
	if [[ "$line" == '```' ]]; then
		in_fence=""
		continue
	fi
	[[ "$in_fence" == prose ]] || printf '%s\n' "$line" >>"$target"
done <"$doc"
if [[ -n "$in_fence" ]]; then
	fail "$doc" "a fence is never closed"
fi
if ((nblocks == 0)); then
	fail "$doc" "no \`\`\`sh blocks"
fi

# --- servers -------------------------------------------------------------------

# port_map holds "DOCPORT REALPORT" lines; subst rewrites a block with it.
: >"$work/ports"
subst() {
	local from to script=""
	while read -r from to; do
		script+="s/127\\.0\\.0\\.1:$from\\b/127.0.0.1:$to/g;"
	done <"$work/ports"
	if [[ -n "$script" ]]; then sed -e "$script" "$1"; else cat "$1"; fi
}

# start_server NAME COMMAND: runs COMMAND (a `pemba serve...` or `pemba
# proxy` line of the page) with its listen address on port 0 and the ports
# of servers started before it replaced, and records the port it got.
start_server() {
	local name=$1 cmd=$2 docport log port=""
	if [[ ! "$cmd" =~ (--grpc-addr|--listen)[[:space:]=]127\.0\.0\.1:([0-9]+) ]]; then
		fail "$name" "a server line needs --grpc-addr (or, for pemba proxy, --listen) 127.0.0.1:PORT: $cmd"
		return
	fi
	docport=${BASH_REMATCH[2]}
	log="$work/servers/$docport.log"
	cmd=${cmd/127.0.0.1:$docport/127.0.0.1:0}
	# Addresses of servers started before (pemba proxy's upstreams).
	printf '%s\n' "$cmd" >"$work/server.cmd"
	cmd=$(subst "$work/server.cmd")
	(cd "$run_dir" && exec bash -c "exec $cmd") >"$log" 2>&1 &
	server_pids+=($!)
	for _ in $(seq 100); do
		port=$(sed -n 's/.*listening on .*port \([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)
		[[ -n "$port" ]] && break
		sleep 0.05
	done
	cp "$log" "$work/out"
	if [[ -z "$port" ]]; then
		fail "$name" "the server did not report its port: $cmd"
		return
	fi
	echo "$docport $port" >>"$work/ports"
	ok "$name: started $cmd"
}

# --- blocks --------------------------------------------------------------------

# run_block FILE: runs one ```sh block and checks it against its own
# `# expect` lines.
run_block() {
	local file=$1 name want_exit="" want_fail="" status line
	local -a outputs=()
	name="$(basename "$doc"):$(cat "${file%.sh}.line")"
	while IFS= read -r line; do
		if [[ "$line" =~ ^[[:space:]]*#\ expect\ output:\ (.*)$ ]]; then
			outputs+=("${BASH_REMATCH[1]}")
		elif [[ "$line" =~ ^[[:space:]]*#\ expect\ failure:\ (.*)$ ]]; then
			want_fail=1
			outputs+=("${BASH_REMATCH[1]}")
		elif [[ "$line" =~ ^[[:space:]]*#\ expect\ exit\ ([0-9]+):\ (.*)$ ]]; then
			want_exit=${BASH_REMATCH[1]}
			outputs+=("${BASH_REMATCH[2]}")
		fi
	done <"$file"
	# The block's PEMBA_* exports reach the next blocks when it runs to
	# its end (a failing block under -e keeps the previous ones).
	rm -f "$work/env.new"
	# shellcheck disable=SC2016 # $? and $__status are for the block's shell
	{
		subst "$file"
		printf '\n__status=$?\n'
		printf 'export -p | grep -E "^declare -x PEMBA_[A-Z_]*=" >"%s" || true\n' "$work/env.new"
		printf '(exit $__status)\n'
	} >"$work/current.sh"
	(
		cd "$run_dir" || exit 99
		# shellcheck disable=SC1091
		source "$work/env"
		if [[ -z "$want_fail" && -z "$want_exit" ]]; then
			set -e -o pipefail
		fi
		# shellcheck disable=SC1091
		source "$work/current.sh"
	) >"$work/out" 2>&1 </dev/null
	status=$?
	[[ -f "$work/env.new" ]] && mv "$work/env.new" "$work/env"
	if [[ -n "$want_exit" ]]; then
		if ((status != want_exit)); then
			fail "$name" "expected exit status $want_exit, got $status"
			return
		fi
	elif [[ -n "$want_fail" ]]; then
		if ((status == 0)); then
			fail "$name" "expected a failure, the block succeeded"
			return
		fi
	elif ((status != 0)); then
		fail "$name" "a command failed (exit status $status)"
		return
	fi
	local s
	for s in "${outputs[@]}"; do
		if ! grep -q -F -- "$s" "$work/out"; then
			fail "$name" "the output lacks: $s"
			return
		fi
	done
	local first
	first=$(grep -v -E '^[[:space:]]*(#|$)' "$file" | head -n 1)
	ok "$name: $first"
}

start=$SECONDS
for file in "$work"/blocks/*; do
	case $file in
	*.sh) run_block "$file" ;;
	*.server)
		while IFS= read -r line; do
			[[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
			start_server "$(basename "$doc"):$(cat "${file%.server}.line")" "$line"
		done <"$file"
		;;
	esac
done

echo "($((SECONDS - start)) s)"
echo "$passed passed, $failed failed"
((failed == 0))
