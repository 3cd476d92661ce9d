#!/usr/bin/env bash
# bench_verify.sh -- `pemba verify` between two pemba servers holding the
# same N relationships (default 1M): wall time and the client's peak RSS,
# with --checks 0 (schema + relationships only) and --checks 100, and
# once more with a run size that forces the external sort to spill.
#
#   bench/bench_verify.sh [--pemba build-rel/pemba] [--relationships N]
#
# Servers: `pemba serve-testing` (in-memory SQLite, one per token), the
# data loaded with `pemba relationship import` (not timed).
set -uo pipefail
pemba=build-rel/pemba
n=1000000
while (($#)); do
	case $1 in
	--pemba) pemba=$2; shift 2 ;;
	--relationships) n=$2; shift 2 ;;
	--help | -h) sed -n '2,10p' "$0"; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$work"' EXIT
start() {
	"$pemba" serve-testing --grpc-addr 127.0.0.1:0 >"$work/$1.out" 2>"$work/$1.err" &
	pids+=($!)
	for _ in $(seq 100); do
		port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/$1.err" "$work/$1.out" | head -n 1)
		[[ -n "$port" ]] && return 0
		sleep 0.1
	done
	echo "server $1 did not start" >&2
	exit 1
}
start a; pa=$port
start b; pb=$port
cat >"$work/schema.zed" <<'ZED'
definition user {}
definition group {
	relation member: user
}
definition document {
	relation viewer: user | group#member
	relation editor: user
	permission edit = editor
	permission view = viewer + edit
}
ZED
awk -v n="$n" 'BEGIN {
	for (i = 0; i < n * 0.9; i++) printf "document:doc%d#viewer@user:u%d\n", i, (i * 7919) % 50000
	for (i = 0; i < n * 0.05; i++) printf "document:doc%d#editor@user:u%d\n", i * 3, i % 5000
	for (i = 0; i < n * 0.05; i++) printf "group:g%d#member@user:u%d\n", i % 1000, i
}' >"$work/rels.txt"
for p in "$pa" "$pb"; do
	"$pemba" schema write "$work/schema.zed" --insecure --endpoint "127.0.0.1:$p" --token t >/dev/null
	t0=$(date +%s.%N)
	"$pemba" relationship import "$work/rels.txt" --insecure --endpoint "127.0.0.1:$p" --token t >/dev/null 2>&1
	echo "imported $(wc -l <"$work/rels.txt") relationships into 127.0.0.1:$p in $(echo "$(date +%s.%N) - $t0" | bc) s"
done
measure() {
	local label=$1
	shift
	/usr/bin/time -f "%e %M" -o "$work/time" "$pemba" verify --insecure \
		--from-endpoint "127.0.0.1:$pa" --from-token t --to-endpoint "127.0.0.1:$pb" --to-token t "$@" >"$work/out" 2>"$work/err"
	local rc=$?
	read -r secs kb <"$work/time"
	printf '%-40s exit %d  %6.2f s  peak RSS %6.1f MB  %s\n' "$label" "$rc" "$secs" "$(echo "$kb / 1024" | bc -l)" \
		"$(grep '^relationships:' "$work/out")"
}
measure "verify --checks 0"           --checks 0
measure "verify --checks 100"         --checks 100
PEMBA_TEST_VERIFY_RUN_BYTES=4194304 measure "verify --checks 0, 4 MB runs" --checks 0
