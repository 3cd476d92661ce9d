#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests.
#
#   pg_cluster.sh start DIR   initdb (once) and start a cluster in DIR/data on
#                             127.0.0.1 and a free port; writes the admin URI
#                             (database `postgres`) to DIR/uri and prints it
#   pg_cluster.sh stop DIR    stop it (the directory stays; rm -rf it after)
#   pg_cluster.sh restart DIR stop, then start on the same port
#   pg_cluster.sh standby PRIMARY_DIR DIR
#                             a streaming standby of the (running) cluster
#                             in PRIMARY_DIR: pg_basebackup -R into DIR/data,
#                             started on another free port (hot standby,
#                             read-only); writes its URI to DIR/uri.  stop,
#                             restart work on DIR as on a primary.
#
# Durability is off (fsync, synchronous_commit, full_page_writes): the
# cluster lives for one test run.  Trust authentication on 127.0.0.1 only.
# As root the server runs as user `postgres` (PostgreSQL refuses root).
# PGBIN overrides the directory of initdb/pg_ctl.
set -euo pipefail
cmd=${1:?usage: pg_cluster.sh start|stop|restart DIR | standby PRIMARY_DIR DIR}
DIR=${2:?usage: pg_cluster.sh start|stop|restart DIR | standby PRIMARY_DIR DIR}
if [ "$cmd" = standby ]; then
	PRIMARY=$(cd "$DIR" && pwd)
	DIR=${3:?usage: pg_cluster.sh standby PRIMARY_DIR DIR}
fi
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PGBIN/initdb" ] || { echo "pg_cluster.sh: no initdb (install postgresql or set PGBIN)" >&2; exit 2; }
if [ "$(id -u)" = 0 ]; then
	as() { runuser -u postgres -- "$@"; }
else
	as() { "$@"; }
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
DATA=$DIR/data

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
	if [ ! -f "$DATA/PG_VERSION" ]; then
		[ "$(id -u)" = 0 ] && chown postgres "$DIR" && chmod 755 "$DIR"
		as "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 \
			--locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 ||
			{ cat "$DIR/initdb.log" >&2; exit 1; }
		port=$(free_port)
		cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 64MB
logging_collector = off
wal_level = replica
max_wal_senders = 10
hot_standby = on
CONF
		echo "$port" >"$DIR/port"
	fi
	port=$(cat "$DIR/port")
	if ! as "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
		as "$PGBIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start >/dev/null
	fi
	echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable" >"$DIR/uri"
	cat "$DIR/uri"
}

stop() {
	if [ -f "$DATA/PG_VERSION" ] && as "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
		as "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
	fi
}

# A hot standby of the cluster in $PRIMARY, streaming from it (initdb's
# pg_hba.conf trusts replication connections from 127.0.0.1).
standby() {
	if [ ! -f "$DATA/PG_VERSION" ]; then
		[ "$(id -u)" = 0 ] && chown postgres "$DIR" && chmod 755 "$DIR"
		as "$PGBIN/pg_basebackup" -D "$DATA" -h 127.0.0.1 \
			-p "$(cat "$PRIMARY/port")" -U postgres -R -X stream \
			>"$DIR/basebackup.log" 2>&1 ||
			{ cat "$DIR/basebackup.log" >&2; exit 1; }
		port=$(free_port)
		cat >>"$DATA/postgresql.conf" <<CONF
port = $port
unix_socket_directories = '$DIR'
CONF
		echo "$port" >"$DIR/port"
	fi
	start
}

case "$cmd" in
start) start ;;
stop) stop ;;
restart) stop; start ;;
standby) standby ;;
*) echo "usage: pg_cluster.sh start|stop|restart DIR | standby PRIMARY_DIR DIR" >&2; exit 2 ;;
esac
