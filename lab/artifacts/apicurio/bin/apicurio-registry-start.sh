#!/usr/bin/env bash
# Lab build of Apicurio Registry (assembled from Maven Central artifacts).
#   apicurio-registry-start.sh [-daemon]
# Runs the Quarkus application on Java 17 in the foreground (exec: the java
# process keeps this PID; it exits with 143 after SIGTERM), or with -daemon in
# the background, console output in $LOG_DIR/apicurio-registry.out and PID in
# $LOG_DIR/apicurio-registry.pid.
# Environment:
#   JAVA_HOME            java to use (default: java on PATH)
#   REGISTRY_CONFIG      config file (default: <install>/config/application.properties)
#   REGISTRY_HEAP_OPTS   default "-Xms64m -Xmx256m"
#   REGISTRY_JVM_OPTS    default "-XX:+UseSerialGC -XX:MaxMetaspaceSize=192m -Xss512k"
#   REGISTRY_OPTS        extra JVM options / -D overrides, e.g. -Dquarkus.log.level=INFO
#   REGISTRY_HTTP_HOST   bind address     (overrides quarkus.http.host)
#   REGISTRY_HTTP_PORT   HTTP port        (overrides quarkus.http.port)
#   REGISTRY_DATA_DIR    H2 database dir  (overrides apicurio.datasource.url with
#                        jdbc:h2:file:$REGISTRY_DATA_DIR/registry and the scratch dirs)
#   REGISTRY_TRUSTED_CA_FILE  PEM certificate(s) of the CA that signed the OIDC provider's HTTPS
#                        certificate: imported at every start into REGISTRY_TRUSTSTORE (PKCS12, made
#                        anew), which becomes the JVM's trust store (the registry's only outbound
#                        HTTPS is to the provider)
#   REGISTRY_TRUSTSTORE  where that trust store goes (default: <install>/logs/oidc-truststore.p12)
#   LOG_DIR              for -daemon (default: <install>/logs)
set -euo pipefail

base_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REGISTRY_CONFIG=${REGISTRY_CONFIG:-"$base_dir/config/application.properties"}
REGISTRY_HEAP_OPTS=${REGISTRY_HEAP_OPTS:-"-Xms64m -Xmx256m"}
REGISTRY_JVM_OPTS=${REGISTRY_JVM_OPTS:-"-XX:+UseSerialGC -XX:MaxMetaspaceSize=192m -Xss512k"}
REGISTRY_OPTS=${REGISTRY_OPTS:-}
LOG_DIR=${LOG_DIR:-"$base_dir/logs"}

if [ -n "${JAVA_HOME:-}" ]; then JAVA="$JAVA_HOME/bin/java"; else JAVA="java"; fi

# Quarkus legacy-jar (3.0.x: <app>-runner.jar + lib/) or fast-jar (quarkus-run.jar)
runner=""
for f in "$base_dir"/apicurio-registry-app-*-runner.jar "$base_dir/quarkus-run.jar"; do
  if [ -f "$f" ]; then runner=$f; break; fi
done
[ -n "$runner" ] || { echo "apicurio-registry-start.sh: no runnable jar in $base_dir" >&2; exit 1; }

case "$REGISTRY_CONFIG" in /*) ;; *) REGISTRY_CONFIG="$PWD/$REGISTRY_CONFIG" ;; esac
if [ ! -r "$REGISTRY_CONFIG" ]; then
  echo "apicurio-registry-start.sh: config file not readable: $REGISTRY_CONFIG" >&2
  exit 1
fi

overrides=()
if [ -n "${REGISTRY_HTTP_HOST:-}" ]; then overrides+=("-Dquarkus.http.host=$REGISTRY_HTTP_HOST"); fi
if [ -n "${REGISTRY_HTTP_PORT:-}" ]; then overrides+=("-Dquarkus.http.port=$REGISTRY_HTTP_PORT"); fi
if [ -n "${REGISTRY_DATA_DIR:-}" ]; then
  overrides+=("-Dapicurio.datasource.url=jdbc:h2:file:$REGISTRY_DATA_DIR/registry;DB_CLOSE_ON_EXIT=FALSE"
              "-Dapicurio.storage.snapshot.location=$REGISTRY_DATA_DIR"
              "-Dapicurio.import.work-dir=$REGISTRY_DATA_DIR")
fi

if [ -n "${REGISTRY_TRUSTED_CA_FILE:-}" ]; then
  if [ -n "${JAVA_HOME:-}" ]; then KEYTOOL="$JAVA_HOME/bin/keytool"; else KEYTOOL="keytool"; fi
  truststore=${REGISTRY_TRUSTSTORE:-"$base_dir/logs/oidc-truststore.p12"}
  mkdir -p "$(dirname "$truststore")"
  rm -f "$truststore"
  # The store holds public certificates only; its password guards nothing secret (keytool needs one).
  "$KEYTOOL" -importcert -noprompt -alias oidc-provider-ca -file "$REGISTRY_TRUSTED_CA_FILE" \
    -keystore "$truststore" -storetype PKCS12 -storepass oidc-trust >/dev/null
  overrides+=("-Djavax.net.ssl.trustStore=$truststore" "-Djavax.net.ssl.trustStoreType=PKCS12"
              "-Djavax.net.ssl.trustStorePassword=oidc-trust")
fi

# Word splitting of the *_OPTS variables is intended.
# shellcheck disable=SC2206
cmd=("$JAVA" $REGISTRY_HEAP_OPTS $REGISTRY_JVM_OPTS
     -Djava.util.logging.manager=org.jboss.logmanager.LogManager
     "-Dquarkus.config.locations=file:$REGISTRY_CONFIG"
     "${overrides[@]}" $REGISTRY_OPTS
     -jar "$runner")

cd "$base_dir"
if [ "${1:-}" = "-daemon" ]; then
  mkdir -p "$LOG_DIR"
  nohup "${cmd[@]}" > "$LOG_DIR/apicurio-registry.out" 2>&1 < /dev/null &
  echo $! > "$LOG_DIR/apicurio-registry.pid"
  exit 0
fi
exec "${cmd[@]}"
