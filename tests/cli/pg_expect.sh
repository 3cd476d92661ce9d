# Shared by the multi-node PostgreSQL shell tests (sourced after
# client_expect.sh, not run): a throwaway cluster of the test's own
# (tests/support/pg_cluster.sh), databases in it, and `pemba serve`
# processes on them, all on 127.0.0.1 and free ports.  The sourcing script
# sets $work and calls pg_cleanup from its EXIT trap.
# shellcheck shell=bash

PG_CLUSTER=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../support/pg_cluster.sh
pg_pids=()

# pg_require: exits (failing) when there are no PostgreSQL server binaries.
pg_require() {
	if [[ -z "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" && -z "${PGBIN:-}" ]]; then
		echo "FAIL no PostgreSQL server binaries (install postgresql, or set PGBIN)"
		echo "0 passed, 1 failed"
		exit 1
	fi
}

# pg_start: starts the cluster in $work/pg; sets $pg_admin (URI of the
# `postgres` database).
pg_start() {
	chmod 755 "$work"
	pg_admin=$(bash "$PG_CLUSTER" start "$work/pg") ||
		{ echo "FAIL cluster did not start"; echo "0 passed, 1 failed"; exit 1; }
}

# pg_uri NAME: the URI of database NAME in the cluster.
pg_uri() { echo "${pg_admin/\/postgres\?//$1?}"; }

# pg_createdb NAME: creates database NAME; prints its URI.
pg_createdb() {
	psql -X -q "$pg_admin" -c "CREATE DATABASE $1" >/dev/null 2>&1 ||
		{ echo "FAIL cannot create database $1" >&2; return 1; }
	pg_uri "$1"
}

# pg_serve NAME URI [ARGS...]: `pemba serve --no-auth` on URI and a free
# port, log in $work/NAME.log; sets $serve_pid and $serve_port.  Exits the
# script when no port is reported within 20 s.
pg_serve() {
	local name=$1 uri=$2
	shift 2
	"$PEMBA_BINARY" serve --no-auth --grpc-addr 127.0.0.1:0 --datastore "$uri" \
		"$@" >"$work/$name.out" 2>"$work/$name.log" &
	serve_pid=$!
	pg_pids+=("$serve_pid")
	serve_port=""
	for _ in $(seq 200); do
		serve_port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$work/$name.log" | head -n 1)
		[[ -n "$serve_port" ]] && return 0
		kill -0 "$serve_pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "FAIL serve ($name) did not report its port"
	sed 's/^/    log: /' "$work/$name.log"
	echo "$passed passed, $((failed + 1)) failed"
	exit 1
}

# pg_stop_pid PID: stops one process started here and waits for it.
pg_stop_pid() {
	kill "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

# pg_cleanup: for the EXIT trap: every server, the cluster, $work.
pg_cleanup() {
	local p
	for p in "${pg_pids[@]}"; do
		kill "$p" 2>/dev/null
	done
	for p in "${pg_pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	bash "$PG_CLUSTER" stop "$work/pg" >/dev/null 2>&1
	rm -rf "$work"
}

# now_ms: wall clock in milliseconds.
now_ms() { date +%s%3N; }
