#!/usr/bin/env bash
# Installs what the tests need beyond redis, with apt-get, when missing:
#   python3-redis  redis-py for /usr/bin/python3 (TestRedisPyCluster checks
#                  that a Redis Cluster client other than go-redis works
#                  unchanged);
#   prometheus     for promtool (TestAlerts: Prometheus's own check of
#                  deploy/prometheus and the alert unit tests).
# Safe to run again. Without root or sudo the tests that need them skip,
# naming what is missing.
set -euo pipefail
pkgs=()
if ! { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'from redis.cluster import RedisCluster' 2>/dev/null; }; then
  pkgs+=(python3-redis)
fi
if ! command -v promtool >/dev/null; then
  pkgs+=(prometheus)
fi
[ ${#pkgs[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "${pkgs[*]} missing and this is not root: the tests that need them will be skipped" >&2; exit 0; }
  sudo=sudo
fi
echo "installing ${pkgs[*]} with apt-get..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends: only promtool is wanted from prometheus, not its
# exporters. The package's service is not started where there is no
# systemd (CI containers).
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
