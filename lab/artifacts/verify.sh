#!/usr/bin/env bash
# Smoke-test the archives made by build.sh, for real and on loopback only:
#   - Kafka 4.1.2 in KRaft combined mode on 127.0.0.1:19092 (controller 19093):
#     storage format, kcat -L, kafka-metadata-quorum, kafka-topics, kafka-configs,
#     kafka-acls (StandardAuthorizer), kafka-broker-api-versions, console
#     producer/consumer, produce+consume with confluent-kafka
#   - Apicurio Registry on 127.0.0.1:18081 (health at /health) with an H2
#     file database in a temp dir: register an Avro schema through the Confluent
#     compatible API, Avro round trip through Kafka, restart, schema still there
#   - every listening socket of the started processes is on 127.0.0.1
#   - idle RSS of broker and registry
# Everything runs in a temp dir; every process it starts is stopped on exit.
# Needs: the archives (runs build.sh, a no-op when they are up to date), kcat,
# curl, ss, and a Python with confluent-kafka (PYTHON, default <repo>/.venv/bin/python).
# Usage: lab/artifacts/verify.sh      (KEEP_TMP=1 keeps the temp dir for inspection)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-"$REPO_ROOT/.venv/bin/python"}
HOST=127.0.0.1
KAFKA_PORT=19092
CONTROLLER_PORT=19093
REGISTRY_PORT=18081
BOOTSTRAP="$HOST:$KAFKA_PORT"
REGISTRY_URL="http://$HOST:$REGISTRY_PORT/apis/ccompat/v7"
HEALTH_URL="http://$HOST:$REGISTRY_PORT/health"

step() { echo; echo "### $*"; }
ok()   { echo "OK: $*"; }
die()  { echo "VERIFY FAILED: $*" >&2; exit 1; }

for tool in kcat curl ss tar; do command -v "$tool" >/dev/null || die "$tool not found"; done
[ -x "$PYTHON" ] || die "no Python at $PYTHON"

mapfile -t archives < <("$HERE/build.sh")
KAFKA_TGZ=${archives[0]}
APICURIO_TGZ=${archives[1]}

TMP=$(mktemp -d /tmp/lab-artifacts-verify.XXXXXX)
STARTED_PIDS=()

stop_pid() {  # stop_pid PID: TERM, wait up to 60 s, then KILL
  local pid=$1 _
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "pid $pid did not stop after SIGTERM, killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
  if [ "$rc" -ne 0 ]; then
    echo "--- last lines of the logs in $TMP:" >&2
    for f in "$TMP"/*.out; do
      [ -f "$f" ] || continue
      echo "--- $f" >&2
      tail -n 30 "$f" >&2 || true
    done
  fi
  if [ "${KEEP_TMP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "(temp dir kept: $TMP)" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2 _
  shift 2
  for _ in $(seq 1 "$secs"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "$what not ready after ${secs}s"
}

rss_mb() { awk '/^VmRSS:/ {printf "%d", $2/1024}' "/proc/$1/status"; }

check_loopback_only() {  # check_loopback_only PID NAME
  local pid=$1 name=$2 addrs bad
  addrs=$(ss -Hltnp | grep "pid=$pid," | awk '{print $4}' | sed 's/^\[::ffff:\(.*\)\]:/\1:/' | sort -u)
  [ -n "$addrs" ] || die "$name ($pid) listens on nothing?"
  bad=$(grep -v "^$HOST:" <<< "$addrs" || true)
  [ -z "$bad" ] || die "$name listens on non-loopback addresses: $bad"
  ok "$name listens only on: $(tr '\n' ' ' <<< "$addrs")"
}

###############################################################################
step "Kafka: extract $KAFKA_TGZ"
tar -xzf "$KAFKA_TGZ" -C "$TMP"
K="$TMP/$(basename "$KAFKA_TGZ" .tgz)"
[ -x "$K/bin/kafka-server-start.sh" ] || die "no bin/kafka-server-start.sh in the archive"

cat > "$TMP/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$TMP/kraft-data
num.partitions=1
offsets.topic.replication.factor=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
EOF

step "Kafka: kafka-storage.sh random-uuid + format --standalone"
CLUSTER_ID=$("$K/bin/kafka-storage.sh" random-uuid)
echo "cluster id: $CLUSTER_ID"
"$K/bin/kafka-storage.sh" format -t "$CLUSTER_ID" -c "$TMP/server.properties" --standalone
[ -f "$TMP/kraft-data/meta.properties" ] || die "format wrote no meta.properties"

step "Kafka: kafka-server-start.sh"
export LOG_DIR="$TMP/kafka-logs"
KAFKA_HEAP_OPTS="-Xms256m -Xmx512m" "$K/bin/kafka-server-start.sh" "$TMP/server.properties" \
  > "$TMP/kafka.out" 2>&1 &
KAFKA_PID=$!
STARTED_PIDS+=("$KAFKA_PID")
T0=$SECONDS
wait_for 90 "Kafka broker" kcat -b "$BOOTSTRAP" -L -t __none -m 2
echo "broker answering after $((SECONDS - T0))s (pid $KAFKA_PID)"
unset LOG_DIR

step "kcat -b $BOOTSTRAP -L"
kcat -b "$BOOTSTRAP" -L -m 10 | tee "$TMP/kcat-L.txt"
grep -q "broker 1 at $HOST:$KAFKA_PORT" "$TMP/kcat-L.txt" || die "kcat -L does not list broker 1"
ok "kcat lists broker 1"

step "kafka-metadata-quorum.sh describe --status"
"$K/bin/kafka-metadata-quorum.sh" --bootstrap-server "$BOOTSTRAP" describe --status | tee "$TMP/quorum.txt"
grep -Eq '^LeaderId: +1$' "$TMP/quorum.txt" || die "quorum leader is not node 1"
ok "quorum leader is node 1"

step "kafka-topics.sh --create / --describe"
"$K/bin/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --topic lab-verify \
  --partitions 3 --replication-factor 1
"$K/bin/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --describe --topic lab-verify | tee "$TMP/topic.txt"
grep -q 'PartitionCount: 3' "$TMP/topic.txt" || die "topic lab-verify does not have 3 partitions"
ok "topic lab-verify created"

step "kafka-configs.sh (alter + describe a topic config)"
"$K/bin/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --alter --entity-type topics \
  --entity-name lab-verify --add-config retention.ms=3600000
"$K/bin/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --describe --entity-type topics \
  --entity-name lab-verify | tee "$TMP/configs.txt"
grep -q 'retention.ms=3600000' "$TMP/configs.txt" || die "kafka-configs did not set retention.ms"
ok "kafka-configs works"

step "kafka-acls.sh (add + list)"
"$K/bin/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --add --allow-principal User:lab \
  --operation Read --topic lab-verify >/dev/null
"$K/bin/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --list --topic lab-verify | tee "$TMP/acls.txt"
grep -q 'principal=User:lab' "$TMP/acls.txt" || die "kafka-acls did not list the ACL"
ok "kafka-acls works"

step "kafka-broker-api-versions.sh"
"$K/bin/kafka-broker-api-versions.sh" --bootstrap-server "$BOOTSTRAP" > "$TMP/api-versions.txt"
head -3 "$TMP/api-versions.txt"
grep -q "^$HOST:$KAFKA_PORT (id: 1" "$TMP/api-versions.txt" || die "no api versions for broker 1"
ok "kafka-broker-api-versions works ($(grep -c '):' "$TMP/api-versions.txt" || true) APIs)"

step "kafka-console-producer.sh / kafka-console-consumer.sh"
printf 'console-1\nconsole-2\nconsole-3\n' \
  | "$K/bin/kafka-console-producer.sh" --bootstrap-server "$BOOTSTRAP" --topic lab-console
"$K/bin/kafka-console-consumer.sh" --bootstrap-server "$BOOTSTRAP" --topic lab-console \
  --from-beginning --max-messages 3 --timeout-ms 30000 > "$TMP/console.txt"
[ "$(sort "$TMP/console.txt" | tr '\n' ' ')" = "console-1 console-2 console-3 " ] \
  || die "console consumer read: $(cat "$TMP/console.txt")"
ok "console producer/consumer round trip"

step "confluent-kafka produce + consume"
"$PYTHON" "$HERE/verify_clients.py" kafka "$BOOTSTRAP" lab-verify

###############################################################################
step "Apicurio: extract $APICURIO_TGZ"
tar -xzf "$APICURIO_TGZ" -C "$TMP"
A="$TMP/$(basename "$APICURIO_TGZ" .tgz)"
mkdir -p "$TMP/registry-data"

start_registry() {
  REGISTRY_HTTP_HOST=$HOST REGISTRY_HTTP_PORT=$REGISTRY_PORT REGISTRY_DATA_DIR="$TMP/registry-data" \
    "$A/bin/apicurio-registry-start.sh" >> "$TMP/registry.out" 2>&1 &
  REGISTRY_PID=$!
  STARTED_PIDS+=("$REGISTRY_PID")
  local t0=$SECONDS
  wait_for 120 "Apicurio health" curl -fsS "$HEALTH_URL/ready"
  echo "registry healthy after $((SECONDS - t0))s (pid $REGISTRY_PID)"
}

step "Apicurio: start (1st)"
start_registry
curl -fsS "$HEALTH_URL" | "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print("health:", d["status"], [c["name"] for c in d["checks"]])'

curl -fsS "http://$HOST:$REGISTRY_PORT/apis/ccompat/v7/subjects"; echo
ls "$TMP/registry-data"
[ -f "$TMP/registry-data/registry.mv.db" ] || die "no H2 file database in $TMP/registry-data"
ok "H2 file database at $TMP/registry-data/registry.mv.db"

step "Apicurio: register an Avro schema via $REGISTRY_URL"
SCHEMA_ID=$("$PYTHON" "$HERE/verify_clients.py" sr-register "$REGISTRY_URL" lab-verify-value)
echo "schema id: $SCHEMA_ID"
"$PYTHON" "$HERE/verify_clients.py" sr-check "$REGISTRY_URL" lab-verify-value "$SCHEMA_ID"
"$PYTHON" "$HERE/verify_clients.py" avro-roundtrip "$BOOTSTRAP" "$REGISTRY_URL" lab-avro

step "listening sockets"
check_loopback_only "$KAFKA_PID" "Kafka"
check_loopback_only "$REGISTRY_PID" "Apicurio"

step "idle RSS (after 20 s idle)"
sleep 20
KAFKA_RSS=$(rss_mb "$KAFKA_PID")
REGISTRY_RSS=$(rss_mb "$REGISTRY_PID")
echo "RSS: Kafka broker+controller ${KAFKA_RSS} MB (-Xmx512m), Apicurio ${REGISTRY_RSS} MB (-Xmx256m)"

step "Apicurio: restart (apicurio-registry-stop.sh, start again)"
"$A/bin/apicurio-registry-stop.sh"
for _ in $(seq 1 60); do kill -0 "$REGISTRY_PID" 2>/dev/null || break; sleep 1; done
kill -0 "$REGISTRY_PID" 2>/dev/null && die "registry did not stop on SIGTERM"
wait "$REGISTRY_PID" 2>/dev/null || true
ok "registry stopped"
start_registry
"$PYTHON" "$HERE/verify_clients.py" sr-check "$REGISTRY_URL" lab-verify-value "$SCHEMA_ID"
ok "schema $SCHEMA_ID survived the restart"

step "stop Kafka (kafka-server-stop.sh)"
"$K/bin/kafka-server-stop.sh"
for _ in $(seq 1 60); do kill -0 "$KAFKA_PID" 2>/dev/null || break; sleep 1; done
kill -0 "$KAFKA_PID" 2>/dev/null && die "Kafka did not stop on SIGTERM"
wait "$KAFKA_PID" 2>/dev/null || true
ok "Kafka stopped"
grep -q 'Kafka Server started' "$TMP/kafka-logs/server.log" || die "no server.log written by log4j2"
ok "log4j2 wrote $TMP/kafka-logs/server.log"

echo
echo "ALL CHECKS PASSED (Kafka RSS ${KAFKA_RSS} MB, Apicurio RSS ${REGISTRY_RSS} MB)"
