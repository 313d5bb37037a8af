#!/usr/bin/env bash
# Installs what the tests need beyond redis, with apt-get, when missing:
#   python3-redis  redis-py for /usr/bin/python3 (TestRedisPyCluster checks
#                  that a Redis Cluster client other than go-redis works
#                  unchanged);
#   prometheus     for promtool (TestAlerts: Prometheus's own check of
#                  deploy/prometheus and the alert unit tests); its daemon
#                  is kept from starting, even where systemd runs;
#   gcc            for the race detector (make unit runs go test -race).
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
if ! command -v gcc >/dev/null; then
  pkgs+=(gcc)
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
# exporters. A policy-rc.d that refuses every start keeps the package's
# service from starting (a Prometheus on :9090 of a developer's machine);
# one the machine already has is left alone.
policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  policy=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
fi
status=0
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null || status=$?
[ -n "$policy" ] && $sudo rm -f "$policy"
# Nor does it start at the next boot.
if [[ " ${pkgs[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  $sudo systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
exit $status
