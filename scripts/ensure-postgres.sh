#!/usr/bin/env bash
# Makes sure the PostgreSQL that the tests use answers: DATABASE_URL's host and port, by default
# 127.0.0.1:5432. When nothing answers there, starts the one in docker-compose.yml; when that is not
# possible either, says what to do and fails.
set -euo pipefail

url=${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
# postgres://[user[:password]@]host[:port]/db
rest=${url#*://}
rest=${rest#*@}
hostport=${rest%%/*}
host=${hostport%%:*}
port=5432
[[ $hostport == *:* ]] && port=${hostport##*:}

reachable() { timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; }

reachable && exit 0

if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 \
    && docker info >/dev/null 2>&1; then
  echo "No PostgreSQL answers at $host:$port; starting the one in docker-compose.yml." >&2
  docker compose up -d --wait postgres
  for _ in $(seq 1 60); do
    reachable && exit 0
    sleep 1
  done
fi

cat >&2 <<MSG
error: the tests need PostgreSQL, and none answers at $host:$port.
Start one of these ways, then run 'make test' again:
  - make db-up                      (PostgreSQL 15 in Docker, on 127.0.0.1:5432)
  - pg_ctlcluster 15 main start     (a Debian/Ubuntu PostgreSQL already installed)
  - DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/DB make test   (any other server;
    the user must be allowed to CREATE DATABASE)
MSG
exit 1
