#!/bin/sh
# tests/pg_cluster.sh - a throwaway PostgreSQL cluster for the tests.
#   pg_cluster.sh start DIR   initdb + pg_ctl start in DIR (socket in DIR,
#                             no TCP); prints the URL of its "postgres"
#                             database: postgresql:///postgres?host=DIR
#   pg_cluster.sh stop DIR    stop it (immediate) and remove DIR
# As root the server runs as the postgres user (initdb refuses root).
set -eu
cmd=$1 dir=$2
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "pg_cluster: no PostgreSQL server installed (make deps)" >&2; exit 1; }
run() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case $cmd in
start)
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres "$dir"
	chmod 755 "$dir"    # the socket: tests run commands as nobody too
	run "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 \
	    --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
	    { cat "$dir/initdb.log" >&2; exit 1; }
	run "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o \
	    "-k $dir -c listen_addresses= -c max_connections=300 -c fsync=off -c full_page_writes=off" \
	    start >/dev/null ||
	    { cat "$dir/server.log" >&2; exit 1; }
	echo "postgresql:///postgres?host=$dir&user=postgres"
	;;
stop)
	[ -d "$dir/data" ] && run "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	rm -rf "$dir"
	;;
*)
	echo "usage: pg_cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
