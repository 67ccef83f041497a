#!/usr/bin/env bash
# Makes sure a Redis server answers at $REDIS_HOST:$REDIS_PORT (default
# 127.0.0.1:6379) for the bot's cache, installing and starting Debian's
# redis-server where it is missing. Only touches a local server: for a remote
# host it just checks that the server answers.
set -euo pipefail

host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}

log() { printf 'ensure-redis: %s\n' "$*" >&2; }
answers() { redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG; }

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  case "$host" in
    127.0.0.1|localhost|::1) ;;
    *) log "redis-cli is missing and $host is not local: install redis-tools to check it"; exit 1 ;;
  esac
  log "Redis is not installed: installing it from Debian (apt-get)"
  bash "$(dirname "$0")/ensure-apt-packages.sh" redis-server
fi

case "$host" in
  127.0.0.1|localhost|::1) ;;
  *)
    answers || { log "no server answers at $host:$port"; exit 1; }
    exit 0
    ;;
esac

if ! answers; then
  log "starting redis-server on $host:$port"
  # Without systemd (containers, CI), start it as a daemon with Debian's config
  # where it matches the port, else with the defaults on the requested port.
  if [[ $port == 6379 && -f /etc/redis/redis.conf ]]; then
    if command -v service >/dev/null 2>&1 && service redis-server start >/dev/null 2>&1; then :; else
      redis-server /etc/redis/redis.conf --daemonize yes --bind "$host" --port "$port" >/dev/null
    fi
  else
    redis-server --daemonize yes --bind "$host" --port "$port" --save '' --appendonly no >/dev/null
  fi
  for _ in $(seq 1 40); do
    answers && break
    sleep 0.25
  done
  answers || { log "Redis did not start"; exit 1; }
fi
