#!/usr/bin/env bash
# Build the lab's software archives from Maven Central artifacts:
#
#   .cache/artifacts/kafka_2.13-4.1.2.tgz           Apache Kafka 4.1.2 (KRaft), Apache archive layout
#   .cache/artifacts/apicurio-registry-3.0.9.tgz    Apicurio Registry 3.0.9 (Quarkus app, H2 file storage)
#   .cache/artifacts/keycloak-26.5.6/               Keycloak 26.5.6, unpacked and built (the lab's identity
#                                                   provider; runs on the machine, never shipped to a host)
#
# each with a <archive>.sha256 beside it (sha256sum format). Every downloaded
# file is checked against the committed kafka/SHA256SUMS and apicurio/SHA256SUMS
# (Maven itself runs with --strict-checksums). Downloads go to .cache/artifacts/m2.
#
# Idempotent: when an archive exists, matches its .sha256 and was built from the
# same inputs (this script, the pom, the SHA256SUMS, the bin/ and config/ files),
# it is kept and nothing is downloaded.
#
# Usage: lab/artifacts/build.sh [--force] [--refresh-sums]
#   --force          rebuild both archives
#   --refresh-sums   (after a version bump) rewrite the committed SHA256SUMS files
#                    from what Maven downloaded instead of checking against them
# Prints the two archive paths and the Keycloak folder on stdout; progress goes to stderr.
# Environment: ARTIFACTS_CACHE (default <repo>/.cache/artifacts), MVN (default mvn).
set -euo pipefail

KAFKA_VERSION=4.1.2
SCALA_VERSION=2.13
# 3.0.9 is the newest Apicurio Registry 3.x served whose application runs on
# Java 17: the 3.3.x application classes are compiled for Java 21 (class file 65).
APICURIO_VERSION=3.0.9
# Keycloak 26 needs Java 21+: the machine's Temurin 25 JDK (Java 17 stays the default for everything else).
KEYCLOAK_VERSION=26.5.6
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
# fixed timestamp for archive entries, so that equal inputs give equal archives
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${ARTIFACTS_CACHE:-"$REPO_ROOT/.cache/artifacts"}
M2="$CACHE/m2"
WORK="$CACHE/work"

FORCE=false
REFRESH_SUMS=false
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=true ;;
    --refresh-sums) REFRESH_SUMS=true; FORCE=true ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "==> $*" >&2; }
die() { echo "build.sh: ERROR: $*" >&2; exit 1; }

for tool in java tar gzip sha256sum unzip; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
MVN_BIN=${MVN:-mvn}

mvn_run() {
  command -v "$MVN_BIN" >/dev/null || die "$MVN_BIN (Maven) not found"
  # Maven's output goes to a log, shown on failure: stdout carries only the archive paths
  local mvn_log="$WORK/mvn.log"
  if ! "$MVN_BIN" -B --strict-checksums -Dstyle.color=never -Dmaven.repo.local="$M2" "$@" \
       > "$mvn_log" 2>&1; then
    grep -vE '^\[INFO\] (Download|Downloaded|Downloading) ' "$mvn_log" | tail -40 >&2
    die "Maven failed: $*"
  fi
}

# fingerprint <files...>: one hash over the names and contents of the inputs
fingerprint() {
  local f
  for f in "$@"; do
    printf '%s ' "${f#"$HERE"/}"
    if [ -f "$f" ]; then sha256sum < "$f"; else echo missing; fi
  done | sha256sum | cut -d' ' -f1
}

# up_to_date ARCHIVE FINGERPRINT: archive, .sha256 and .inputs all agree
up_to_date() {
  local archive=$1 fp=$2
  [ "$FORCE" = false ] || return 1
  [ -f "$archive" ] && [ -f "$archive.sha256" ] && [ -f "$archive.inputs" ] || return 1
  [ "$(cat "$archive.inputs")" = "$fp" ] || return 1
  (cd "$(dirname "$archive")" && sha256sum --quiet --strict -c "$(basename "$archive").sha256") >/dev/null 2>&1
}

# check_sums DIR SUMSFILE: DIR holds exactly the files listed, with those hashes
check_sums() {
  local dir=$1 sums=$2 listed present
  [ -s "$sums" ] || die "$sums is missing or empty (run with --refresh-sums once to create it)"
  listed=$(awk '{sub(/^\*/, "", $2); print $2}' "$sums" | sort)
  present=$(cd "$dir" && find . -maxdepth 1 -type f -printf '%f\n' | sort)
  if [ "$listed" != "$present" ]; then
    echo "--- files listed in $sums vs. files downloaded into $dir:" >&2
    diff <(echo "$listed") <(echo "$present") >&2 || true
    die "the downloaded file set does not match $sums"
  fi
  if ! (cd "$dir" && sha256sum --quiet --strict -c "$sums") >&2; then
    die "SHA-256 MISMATCH against $sums -- refusing to build"
  fi
}

# write_sums DIR SUMSFILE
write_sums() {
  (cd "$1" && find . -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort | xargs sha256sum) > "$2"
  log "wrote $2 ($(wc -l < "$2") files) -- review and commit it"
}

# pack STAGE_PARENT TOPDIR ARCHIVE FINGERPRINT: reproducible .tgz + .sha256 + .inputs
pack() {
  local parent=$1 top=$2 archive=$3 fp=$4
  rm -f "$archive" "$archive.sha256" "$archive.inputs"
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
      --mode='u+rwX,go+rX,go-w' --format=gnu -C "$parent" -cf - "$top" \
    | gzip -n -6 > "$archive.tmp"
  mv "$archive.tmp" "$archive"
  (cd "$(dirname "$archive")" && sha256sum "$(basename "$archive")") > "$archive.sha256"
  echo "$fp" > "$archive.inputs"
}

mkdir -p "$CACHE" "$WORK"

###############################################################################
# Apache Kafka
###############################################################################
KAFKA_NAME="kafka_${SCALA_VERSION}-${KAFKA_VERSION}"
KAFKA_TGZ="$CACHE/$KAFKA_NAME.tgz"
KAFKA_SRC="$HERE/kafka"

# bin/ wrappers generated below: script name -> main class (as in the 4.1.2 jars)
KAFKA_TOOLS="
kafka-storage.sh                kafka.tools.StorageTool
kafka-metadata-quorum.sh        org.apache.kafka.tools.MetadataQuorumCommand
kafka-topics.sh                 org.apache.kafka.tools.TopicCommand
kafka-configs.sh                kafka.admin.ConfigCommand
kafka-acls.sh                   org.apache.kafka.tools.AclCommand
kafka-console-producer.sh       org.apache.kafka.tools.ConsoleProducer
kafka-console-consumer.sh       org.apache.kafka.tools.consumer.ConsoleConsumer
kafka-broker-api-versions.sh    org.apache.kafka.tools.BrokerApiVersionsCommand
kafka-consumer-groups.sh        org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
kafka-features.sh               org.apache.kafka.tools.FeatureCommand
kafka-cluster.sh                org.apache.kafka.tools.ClusterTool
kafka-log-dirs.sh               org.apache.kafka.tools.LogDirsCommand
kafka-get-offsets.sh            org.apache.kafka.tools.GetOffsetShell
kafka-dump-log.sh               kafka.tools.DumpLogSegments
kafka-reassign-partitions.sh    org.apache.kafka.tools.reassign.ReassignPartitionsCommand
kafka-leader-election.sh        org.apache.kafka.tools.LeaderElectionCommand
kafka-transactions.sh           org.apache.kafka.tools.TransactionsCommand
kafka-delete-records.sh         org.apache.kafka.tools.DeleteRecordsCommand
"

build_kafka() {
  local fp libs stage top name cls jar
  fp=$(fingerprint "${BASH_SOURCE[0]}" "$KAFKA_SRC/pom.xml" "$KAFKA_SRC/SHA256SUMS" \
       "$KAFKA_SRC"/bin/* "$KAFKA_SRC"/config/*)
  if up_to_date "$KAFKA_TGZ" "$fp"; then
    log "Kafka: $KAFKA_TGZ is up to date"
    return 0
  fi

  grep -q "<kafka.version>$KAFKA_VERSION</kafka.version>" "$KAFKA_SRC/pom.xml" \
    || die "kafka/pom.xml does not pin kafka.version $KAFKA_VERSION"

  log "Kafka: resolving $KAFKA_NAME and its runtime dependencies"
  libs="$WORK/kafka-libs"
  rm -rf "$libs"
  mvn_run -f "$KAFKA_SRC/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
    -DincludeScope=runtime -DoutputDirectory="$libs" -Dmdep.overWriteReleases=true
  [ -f "$libs/kafka_${SCALA_VERSION}-${KAFKA_VERSION}.jar" ] || die "Maven did not produce the Kafka jar"

  if [ "$REFRESH_SUMS" = true ]; then
    write_sums "$libs" "$KAFKA_SRC/SHA256SUMS"
    fp=$(fingerprint "${BASH_SOURCE[0]}" "$KAFKA_SRC/pom.xml" "$KAFKA_SRC/SHA256SUMS" \
         "$KAFKA_SRC"/bin/* "$KAFKA_SRC"/config/*)
  fi
  check_sums "$libs" "$KAFKA_SRC/SHA256SUMS"
  log "Kafka: $(find "$libs" -name '*.jar' | wc -l) jars match kafka/SHA256SUMS"

  stage="$WORK/kafka-stage"
  top="$stage/$KAFKA_NAME"
  rm -rf "$stage"
  mkdir -p "$top/bin" "$top/libs" "$top/config" "$top/licenses"
  cp "$libs"/*.jar "$top/libs/"
  cp "$KAFKA_SRC"/config/* "$top/config/"
  install -m 0755 "$KAFKA_SRC"/bin/*.sh "$top/bin/"

  while read -r name cls; do
    [ -n "$name" ] || continue
    {
      echo '#!/usr/bin/env bash'
      echo "# Lab build of Apache Kafka $KAFKA_VERSION: $name runs $cls"
      case "$name" in
        kafka-console-producer.sh|kafka-console-consumer.sh)
          # shellcheck disable=SC2016 # written literally into the wrapper
          echo 'if [ -z "${KAFKA_HEAP_OPTS:-}" ]; then export KAFKA_HEAP_OPTS="-Xmx512M"; fi' ;;
      esac
      echo "exec \"\$(dirname \"\${BASH_SOURCE[0]}\")/kafka-run-class.sh\" $cls \"\$@\""
    } > "$top/bin/$name"
    chmod 0755 "$top/bin/$name"
  done <<< "$KAFKA_TOOLS"

  # every main class used by bin/ must exist in libs/
  local classes
  classes=$(for jar in "$top"/libs/*.jar; do unzip -Z1 "$jar"; done | grep '\.class$' || true)
  for cls in kafka.Kafka $(awk 'NF==2 {print $2}' <<< "$KAFKA_TOOLS"); do
    grep -qxF "$(tr . / <<< "$cls").class" <<< "$classes" || die "main class $cls not found in libs/"
  done

  # licence texts from the Kafka jar, plus a note on how this archive was made
  unzip -p "$top/libs/kafka_${SCALA_VERSION}-${KAFKA_VERSION}.jar" LICENSE > "$top/LICENSE"
  unzip -p "$top/libs/kafka_${SCALA_VERSION}-${KAFKA_VERSION}.jar" NOTICE > "$top/NOTICE"
  cat >> "$top/NOTICE" <<EOF

-------------------------------------------------------------------------------
Lab build note

This archive was assembled by lab/artifacts/build.sh from unmodified artifacts
published to Maven Central: org.apache.kafka:kafka_${SCALA_VERSION}:${KAFKA_VERSION},
org.apache.kafka:kafka-tools:${KAFKA_VERSION} and their runtime dependencies
(without Kafka Connect), plus the log4j2 runtime. It is not the Apache Kafka
release archive: the scripts in bin/ and the files in config/ were written for
the lab. Each jar in libs/ is listed with its SHA-256 in licenses/libs.sha256;
the licences of the third-party jars are inside the jars (META-INF/).
EOF
  cp "$KAFKA_SRC/SHA256SUMS" "$top/licenses/libs.sha256"

  log "Kafka: packing $KAFKA_TGZ"
  pack "$stage" "$KAFKA_NAME" "$KAFKA_TGZ" "$fp"
  rm -rf "$stage"
}

###############################################################################
# Apicurio Registry
###############################################################################
APICURIO_NAME="apicurio-registry-${APICURIO_VERSION}"
APICURIO_TGZ="$CACHE/$APICURIO_NAME.tgz"
APICURIO_SRC="$HERE/apicurio"
# the runnable Quarkus application is published as a classifier
APICURIO_GAV="io.apicurio:apicurio-registry-app:${APICURIO_VERSION}:tar.gz:all"
APICURIO_FILE="apicurio-registry-app-${APICURIO_VERSION}-all.tar.gz"

# Maven reads an artifact's POM (and so its parent POM) even to copy a single
# file. The parent io.apicurio:apicurio-registry:3.0.9 is not served, so a stub
# with those coordinates goes into the cache's local repository. It only lets
# Maven read the app's POM; the archive itself is pinned by apicurio/SHA256SUMS.
install_apicurio_parent_stub() {
  local pom="$WORK/apicurio-registry-${APICURIO_VERSION}-stub.pom"
  local installed="$M2/io/apicurio/apicurio-registry/${APICURIO_VERSION}/apicurio-registry-${APICURIO_VERSION}.pom"
  if [ -f "$installed" ]; then return 0; fi
  cat > "$pom" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <!-- stub written by lab/artifacts/build.sh: the real parent POM is not served -->
  <groupId>io.apicurio</groupId>
  <artifactId>apicurio-registry</artifactId>
  <version>${APICURIO_VERSION}</version>
  <packaging>pom</packaging>
</project>
EOF
  mvn_run org.apache.maven.plugins:maven-install-plugin:3.1.3:install-file \
    -Dfile="$pom" -DpomFile="$pom"
}

build_apicurio() {
  local fp dl stage top runner
  fp=$(fingerprint "${BASH_SOURCE[0]}" "$APICURIO_SRC/SHA256SUMS" \
       "$APICURIO_SRC"/bin/* "$APICURIO_SRC"/config/*)
  if up_to_date "$APICURIO_TGZ" "$fp"; then
    log "Apicurio: $APICURIO_TGZ is up to date"
    return 0
  fi

  log "Apicurio: resolving $APICURIO_GAV"
  dl="$WORK/apicurio-dl"
  rm -rf "$dl"
  mkdir -p "$dl"
  install_apicurio_parent_stub
  mvn_run "$DEPENDENCY_PLUGIN:copy" -Dartifact="$APICURIO_GAV" -DoutputDirectory="$dl" \
    -Dmdep.overWriteReleases=true
  [ -f "$dl/$APICURIO_FILE" ] || die "Maven did not produce $APICURIO_FILE"

  if [ "$REFRESH_SUMS" = true ]; then
    write_sums "$dl" "$APICURIO_SRC/SHA256SUMS"
    fp=$(fingerprint "${BASH_SOURCE[0]}" "$APICURIO_SRC/SHA256SUMS" \
         "$APICURIO_SRC"/bin/* "$APICURIO_SRC"/config/*)
  fi
  check_sums "$dl" "$APICURIO_SRC/SHA256SUMS"
  log "Apicurio: $APICURIO_FILE matches apicurio/SHA256SUMS"

  stage="$WORK/apicurio-stage"
  top="$stage/$APICURIO_NAME"
  rm -rf "$stage"
  mkdir -p "$top"
  tar -xzf "$dl/$APICURIO_FILE" -C "$top" --no-same-owner
  # 3.0.x ships a Quarkus legacy-jar (<app>-runner.jar + lib/), 3.1+ a fast-jar
  # (quarkus-run.jar + app/ lib/ quarkus/); bin/apicurio-registry-start.sh runs either.
  runner="$top/apicurio-registry-app-${APICURIO_VERSION}-runner.jar"
  [ -f "$runner" ] || runner="$top/quarkus-run.jar"
  [ -f "$runner" ] || die "$APICURIO_FILE has no runnable jar"
  find "$top/lib" -name '*h2database.h2-*.jar' | grep -q . || die "$APICURIO_FILE has no H2 driver"
  rmdir "$top/meta" 2>/dev/null || true   # empty in the published archive

  mkdir -p "$top/bin" "$top/config"
  install -m 0755 "$APICURIO_SRC"/bin/*.sh "$top/bin/"
  cp "$APICURIO_SRC"/config/* "$top/config/"
  cp /usr/share/common-licenses/Apache-2.0 "$top/LICENSE" 2>/dev/null \
    || unzip -p "$runner" META-INF/LICENSE > "$top/LICENSE" 2>/dev/null \
    || true
  cat > "$top/NOTICE" <<EOF
Apicurio Registry ${APICURIO_VERSION}
Licensed under the Apache License, Version 2.0 (see LICENSE); the licences of
the bundled libraries (lib/) are inside their jars.

Lab build note

This archive was assembled by lab/artifacts/build.sh from the unmodified
runnable application published to Maven Central as
${APICURIO_GAV} ($(basename "$runner") + lib/).
bin/ and config/ were written for the lab: bin/apicurio-registry-start.sh runs
it on Java 17 with config/application.properties (SQL storage on an H2 file
database).
EOF

  log "Apicurio: packing $APICURIO_TGZ"
  pack "$stage" "$APICURIO_NAME" "$APICURIO_TGZ" "$fp"
  rm -rf "$stage"
}

KEYCLOAK_NAME="keycloak-${KEYCLOAK_VERSION}"
KEYCLOAK_DIR="$CACHE/$KEYCLOAK_NAME"
KEYCLOAK_SRC="$HERE/keycloak"
KEYCLOAK_FILE="keycloak-quarkus-dist-${KEYCLOAK_VERSION}.zip"

keycloak_java_home() {
  local jdk
  for jdk in ${KEYCLOAK_JAVA_HOME:-} /usr/lib/jvm/temurin-2[1-9]-jdk-* /usr/lib/jvm/java-2[1-9]-*; do
    if [ -x "$jdk/bin/java" ]; then echo "$jdk"; return 0; fi
  done
  die "Keycloak $KEYCLOAK_VERSION needs a Java 21+ JDK (set KEYCLOAK_JAVA_HOME)"
}

# Keycloak is unpacked and "built" (Quarkus augmentation with the lab's build options: H2 file
# database, health endpoints) once, so every lab start is `kc.sh start --optimized` (no rebuild).
build_keycloak() {
  local fp dl stage java_home
  fp=$(fingerprint "${BASH_SOURCE[0]}" "$KEYCLOAK_SRC/SHA256SUMS")
  if [ "$FORCE" = false ] && [ -f "$KEYCLOAK_DIR/.inputs" ] && [ "$(cat "$KEYCLOAK_DIR/.inputs")" = "$fp" ]; then
    log "Keycloak: $KEYCLOAK_DIR is up to date"
    return 0
  fi
  java_home=$(keycloak_java_home)
  log "Keycloak: resolving org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION"
  dl="$WORK/keycloak-dl"
  rm -rf "$dl"
  mvn_run "$DEPENDENCY_PLUGIN:copy" -Dartifact="org.keycloak:keycloak-quarkus-dist:${KEYCLOAK_VERSION}:zip" \
    -DoutputDirectory="$dl" -Dmdep.overWriteReleases=true
  if [ "$REFRESH_SUMS" = true ]; then
    write_sums "$dl" "$KEYCLOAK_SRC/SHA256SUMS"
    fp=$(fingerprint "${BASH_SOURCE[0]}" "$KEYCLOAK_SRC/SHA256SUMS")
  fi
  check_sums "$dl" "$KEYCLOAK_SRC/SHA256SUMS"
  stage="$WORK/keycloak-stage"
  rm -rf "$stage" "$KEYCLOAK_DIR"
  mkdir -p "$stage"
  unzip -q "$dl/$KEYCLOAK_FILE" -d "$stage"
  [ -x "$stage/$KEYCLOAK_NAME/bin/kc.sh" ] || die "$KEYCLOAK_FILE has no bin/kc.sh"
  log "Keycloak: build (H2 file database, health endpoints) on $java_home"
  if ! JAVA_HOME="$java_home" "$stage/$KEYCLOAK_NAME/bin/kc.sh" build --db=dev-file --health-enabled=true \
       > "$WORK/keycloak-build.log" 2>&1; then
    tail -20 "$WORK/keycloak-build.log" >&2
    die "kc.sh build failed"
  fi
  echo "$fp" > "$stage/$KEYCLOAK_NAME/.inputs"
  mv "$stage/$KEYCLOAK_NAME" "$KEYCLOAK_DIR"
  rm -rf "$stage"
}

build_kafka
build_apicurio
build_keycloak
rm -rf "$WORK"
echo "$KAFKA_TGZ"
echo "$APICURIO_TGZ"
echo "$KEYCLOAK_DIR"
