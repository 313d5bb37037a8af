#!/usr/bin/env bash
# Installs redis-server (and redis-cli, redis-benchmark) from Debian's
# packages when they are missing. Safe to run again.
set -euo pipefail
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "redis-server is missing and this is not root: install redis-server and redis-tools" >&2; exit 1; }
  sudo=sudo
fi
echo "installing redis-server with apt-get..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq redis-server redis-tools >/dev/null
# Debian's package starts a system redis on 6379; raftproxy does not use it.
redis-server --version
