#!/usr/bin/env bash
# Lab build of Apicurio Registry: stop the registry started from THIS
# installation (a java process running a jar of this install dir) with SIGTERM
# (override with SIGNAL=KILL). Exits 1 if none is running.
base_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIGNAL=${SIGNAL:-TERM}
pids=""
for p in /proc/[0-9]*; do
  [ -r "$p/cmdline" ] || continue
  cmd=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
  case "$cmd" in
    *java*"-jar $base_dir/"*.jar*) pids="$pids ${p#/proc/}" ;;
  esac
done
if [ -z "$pids" ]; then
  echo "No apicurio registry to stop"
  exit 1
fi
# shellcheck disable=SC2086
kill -s "$SIGNAL" $pids
