#!/usr/bin/env bash
# Lab build of Apicurio Registry (assembled from Maven Central artifacts).
#   apicurio-registry-start.sh [-daemon]
# Runs the Quarkus application (quarkus-run.jar) in the foreground (exec: the
# java process keeps this PID), or with -daemon in the background with its
# console output in $LOG_DIR/apicurio-registry.out and its PID in
# $LOG_DIR/apicurio-registry.pid.
# Environment:
#   JAVA_HOME              java to use (default: java on PATH; Java 17+)
#   REGISTRY_CONFIG        config file (default: <install>/config/application.properties)
#   REGISTRY_HEAP_OPTS     default "-Xms64m -Xmx256m"
#   REGISTRY_JVM_OPTS      default "-XX:+UseSerialGC -XX:MaxMetaspaceSize=192m -Xss512k"
#   REGISTRY_OPTS          extra JVM options / -D overrides, e.g. -Dquarkus.http.port=18081
#   REGISTRY_HTTP_HOST, REGISTRY_HTTP_PORT, REGISTRY_MANAGEMENT_PORT, REGISTRY_DATA_DIR
#                          shortcuts overriding the config file (bind address, API
#                          port, health/metrics port, H2 database directory)
#   LOG_DIR                for -daemon (default: <install>/logs)
set -euo pipefail

base_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REGISTRY_CONFIG=${REGISTRY_CONFIG:-"$base_dir/config/application.properties"}
REGISTRY_HEAP_OPTS=${REGISTRY_HEAP_OPTS:-"-Xms64m -Xmx256m"}
REGISTRY_JVM_OPTS=${REGISTRY_JVM_OPTS:-"-XX:+UseSerialGC -XX:MaxMetaspaceSize=192m -Xss512k"}
REGISTRY_OPTS=${REGISTRY_OPTS:-}
LOG_DIR=${LOG_DIR:-"$base_dir/logs"}

if [ -n "${JAVA_HOME:-}" ]; then JAVA="$JAVA_HOME/bin/java"; else JAVA="java"; fi

if [ ! -r "$REGISTRY_CONFIG" ]; then
  echo "apicurio-registry-start.sh: config file not readable: $REGISTRY_CONFIG" >&2
  exit 1
fi
case "$REGISTRY_CONFIG" in /*) ;; *) REGISTRY_CONFIG="$PWD/$REGISTRY_CONFIG" ;; esac

overrides=()
[ -n "${REGISTRY_HTTP_HOST:-}" ] && overrides+=("-Dquarkus.http.host=$REGISTRY_HTTP_HOST" "-Dquarkus.management.host=$REGISTRY_HTTP_HOST")
[ -n "${REGISTRY_HTTP_PORT:-}" ] && overrides+=("-Dquarkus.http.port=$REGISTRY_HTTP_PORT")
[ -n "${REGISTRY_MANAGEMENT_PORT:-}" ] && overrides+=("-Dquarkus.management.port=$REGISTRY_MANAGEMENT_PORT")
if [ -n "${REGISTRY_DATA_DIR:-}" ]; then
  overrides+=("-Dapicurio.datasource.url=jdbc:h2:file:$REGISTRY_DATA_DIR/registry;DB_CLOSE_ON_EXIT=FALSE"
              "-Dapicurio.storage.snapshot.location=$REGISTRY_DATA_DIR/tmp"
              "-Dapicurio.import.work-dir=$REGISTRY_DATA_DIR/tmp")
fi

# shellcheck disable=SC2206
cmd=("$JAVA" $REGISTRY_HEAP_OPTS $REGISTRY_JVM_OPTS
     -Djava.util.logging.manager=org.jboss.logmanager.LogManager
     "-Dquarkus.config.locations=file:$REGISTRY_CONFIG"
     "${overrides[@]}" $REGISTRY_OPTS
     -jar "$base_dir/quarkus-run.jar")

# The app runs from the install dir (Quarkus also looks for ./config/application.properties).
cd "$base_dir"
if [ "${1:-}" = "-daemon" ]; then
  mkdir -p "$LOG_DIR"
  nohup "${cmd[@]}" > "$LOG_DIR/apicurio-registry.out" 2>&1 < /dev/null &
  echo $! > "$LOG_DIR/apicurio-registry.pid"
  exit 0
fi
exec "${cmd[@]}"
