#!/usr/bin/env bash
# Installs what the integration tests need beyond redis: redis-py for
# /usr/bin/python3 (TestRedisPyCluster checks that a Redis Cluster client
# other than go-redis works unchanged). Safe to run again.
set -euo pipefail
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'from redis.cluster import RedisCluster' 2>/dev/null; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "python3-redis is missing and this is not root: TestRedisPyCluster will be skipped" >&2; exit 0; }
  sudo=sudo
fi
echo "installing python3-redis with apt-get..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq python3-redis >/dev/null
