#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers at $PGHOST:$PGPORT as user postgres
# with the documented local password, installing and starting Debian's
# PostgreSQL where it is missing. Only touches a local server: for a remote
# DATABASE_URL it just checks that the server answers.
set -euo pipefail

host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
admin_url="postgres://postgres:postgres@${host}:${port}/postgres"

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }

case "$host" in
  127.0.0.1|localhost|::1) ;;
  *)
    pg_isready -h "$host" -p "$port" -t 10 >/dev/null || { log "no server answers at $host:$port"; exit 1; }
    exit 0
    ;;
esac

if ! ls /etc/postgresql/*/main/postgresql.conf >/dev/null 2>&1; then
  log "PostgreSQL is not installed: installing it from Debian (apt-get)"
  bash "$(dirname "$0")/ensure-apt-packages.sh" postgresql
fi

if ! pg_isready -h "$host" -p "$port" -q; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do
    pg_isready -h "$host" -p "$port" -q && break
    sleep 0.5
  done
  pg_isready -h "$host" -p "$port" -q || { log "PostgreSQL did not start"; exit 1; }
fi

if ! psql "$admin_url" -qtAc 'select 1' >/dev/null 2>&1; then
  # TCP asks for a password we do not know (scram/md5 in pg_hba): give the
  # postgres role the documented local-development password over the socket.
  log "setting the local development password of role postgres"
  runuser -u postgres -- psql -qc "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null
  psql "$admin_url" -qtAc 'select 1' >/dev/null
fi
