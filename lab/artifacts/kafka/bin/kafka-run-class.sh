#!/usr/bin/env bash
# Lab build of Apache Kafka (assembled from Maven Central artifacts).
# A small re-implementation of the upstream kafka-run-class.sh:
#   kafka-run-class.sh [-daemon] [-name NAME] [-loggc] CLASSNAME [ARGS...]
# Environment honoured (same names and defaults as upstream):
#   JAVA_HOME, KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS,
#   KAFKA_LOG4J_OPTS, KAFKA_GC_LOG_OPTS, KAFKA_JMX_OPTS, JMX_PORT, LOG_DIR,
#   CLASSPATH (appended after libs/*).
set -u

if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] [-name servicename] [-loggc] classname [opts]" >&2
  exit 1
fi

base_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Classpath: every jar in libs/, in a stable (sorted) order.
cp=""
for jar in "$base_dir"/libs/*.jar; do
  [ -e "$jar" ] || continue
  cp="${cp:+$cp:}$jar"
done
if [ -n "${CLASSPATH:-}" ]; then
  cp="$cp:$CLASSPATH"
fi

LOG_DIR=${LOG_DIR:-"$base_dir/logs"}

# JMX: unlike upstream, no remote JMX agent unless JMX_PORT is set (upstream's
# default -Dcom.sun.management.jmxremote opens an RMI port on every interface);
# local tools (jcmd, jconsole <pid>) attach without it.
KAFKA_JMX_OPTS=${KAFKA_JMX_OPTS:-}
if [ -n "${JMX_PORT:-}" ]; then
  if [ -z "$KAFKA_JMX_OPTS" ]; then
    KAFKA_JMX_OPTS="-Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false"
  fi
  KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Dcom.sun.management.jmxremote.port=$JMX_PORT"
  if ! echo "$KAFKA_JMX_OPTS" | grep -qF -- "-Dcom.sun.management.jmxremote.rmi.port="; then
    KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Dcom.sun.management.jmxremote.rmi.port=$JMX_PORT"
  fi
fi

# Tools log through config/tools-log4j2.yaml unless told otherwise
# (kafka-server-start.sh points KAFKA_LOG4J_OPTS at config/log4j2.yaml).
KAFKA_LOG4J_OPTS=${KAFKA_LOG4J_OPTS:-"-Dlog4j2.configurationFile=$base_dir/config/tools-log4j2.yaml"}
KAFKA_LOG4J_OPTS="-Dkafka.logs.dir=$LOG_DIR $KAFKA_LOG4J_OPTS"

KAFKA_OPTS=${KAFKA_OPTS:-}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:-"-Xmx256M"}
KAFKA_JVM_PERFORMANCE_OPTS=${KAFKA_JVM_PERFORMANCE_OPTS:-"-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true"}

if [ -n "${JAVA_HOME:-}" ]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA="java"
fi

DAEMON_MODE=false
DAEMON_NAME=""
GC_LOG_ENABLED=false
while [ $# -gt 0 ]; do
  case "$1" in
    -name)   DAEMON_NAME=$2; shift 2 ;;
    -loggc)  GC_LOG_ENABLED=true; shift ;;
    -daemon) DAEMON_MODE=true; shift ;;
    *) break ;;
  esac
done
if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] [-name servicename] [-loggc] classname [opts]" >&2
  exit 1
fi

if [ "$GC_LOG_ENABLED" = true ] || [ "$DAEMON_MODE" = true ]; then
  mkdir -p "$LOG_DIR"
fi

KAFKA_GC_LOG_OPTS=${KAFKA_GC_LOG_OPTS:-}
if [ "$GC_LOG_ENABLED" = true ] && [ -z "$KAFKA_GC_LOG_OPTS" ]; then
  KAFKA_GC_LOG_OPTS="-Xlog:gc*:file=$LOG_DIR/${DAEMON_NAME:-kafka}-gc.log:time,tags:filecount=10,filesize=100M"
fi

# Word splitting of the *_OPTS variables is intended (as upstream).
# shellcheck disable=SC2086
if [ "$DAEMON_MODE" = true ]; then
  CONSOLE_OUTPUT_FILE="$LOG_DIR/${DAEMON_NAME:-kafka}.out"
  nohup "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_GC_LOG_OPTS $KAFKA_JMX_OPTS \
    $KAFKA_LOG4J_OPTS -cp "$cp" $KAFKA_OPTS "$@" > "$CONSOLE_OUTPUT_FILE" 2>&1 < /dev/null &
  exit 0
else
  exec "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_GC_LOG_OPTS $KAFKA_JMX_OPTS \
    $KAFKA_LOG4J_OPTS -cp "$cp" $KAFKA_OPTS "$@"
fi
