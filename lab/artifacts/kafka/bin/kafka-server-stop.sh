#!/usr/bin/env bash
# Lab build of Apache Kafka: stop the Kafka servers (kafka.Kafka) started from
# THIS installation (matched on its libs/ directory), like upstream with SIGTERM
# (override with SIGNAL=KILL). Prints nothing and exits 1 if none is running.
base_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIGNAL=${SIGNAL:-TERM}

pids=""
for p in /proc/[0-9]*; do
  [ -r "$p/cmdline" ] || continue
  cmd=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
  case "$cmd" in
    *java*" kafka.Kafka "*|*java*" kafka.Kafka")
      case "$cmd" in
        *"$base_dir/libs/"*) pids="$pids ${p#/proc/}" ;;
      esac
      ;;
  esac
done

if [ -z "$pids" ]; then
  echo "No kafka server to stop"
  exit 1
fi
# shellcheck disable=SC2086
kill -s "$SIGNAL" $pids
