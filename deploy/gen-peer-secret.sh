#!/bin/sh
# Writes a random peer secret to $1 unless one is there already, readable
# only by uid 999 (raftproxy in its image): the compose stack's members
# authenticate each other with it (--peer-secret-file). Run at every start;
# the secret is made once and kept in its volume.
set -eu
f=${1:?usage: gen-peer-secret.sh FILE}
if [ ! -s "$f" ]; then
	umask 077
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f.tmp"
	mv "$f.tmp" "$f"
	echo "gen-peer-secret: made a new peer secret in $f"
fi
chown 999:999 "$f"
chmod 400 "$f"
