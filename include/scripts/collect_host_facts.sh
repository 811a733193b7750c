#!/bin/sh
# Collects the facts preflight checks need, read-only, in one SSH round trip. POSIX sh: runs on RHEL,
# Ubuntu and Debian as shipped. Output: sections, each introduced by a line "### <name>".
# Environment (set by the caller): EBR_DATA_DIRS, EBR_SERVICE_USER, EBR_JAVA_HOME, EBR_NAMES,
# EBR_ADDRESSES (space separated), EBR_MODE (bare_metal|docker|kubernetes), EBR_INSTALL_DIR.
LC_ALL=C; export LC_ALL
section() { printf '\n### %s\n' "$1"; }

section os_release; cat /etc/os-release 2>/dev/null
section hostname; hostname 2>/dev/null || cat /proc/sys/kernel/hostname
section nproc; nproc 2>/dev/null || grep -c '^processor' /proc/cpuinfo
section meminfo; grep -E '^(MemTotal|MemAvailable|MemFree|Buffers|Cached|SwapTotal):' /proc/meminfo

for dir in $EBR_DATA_DIRS; do
  probe=$dir
  while [ ! -e "$probe" ] && [ "$probe" != "/" ]; do probe=$(dirname "$probe"); done
  section "disk $dir"
  echo "probe=$probe"
  df -Pk "$probe" | tail -n 1
  source=$(findmnt -no SOURCE -T "$probe" 2>/dev/null | sed 's/\[.*//')
  echo "source=$source"
  if [ -b "$source" ]; then
    echo "rotational=$(lsblk -dno ROTA "$source" 2>/dev/null | tr -d ' ')"
  fi
done

section java
java=
if [ -n "$EBR_JAVA_HOME" ] && [ -x "$EBR_JAVA_HOME/bin/java" ]; then
  java=$EBR_JAVA_HOME/bin/java
elif command -v java >/dev/null 2>&1; then
  java=$(command -v java)
fi
if [ -z "$java" ]; then
  echo "java: not found"
else
  # A JDK names its version in its release file; starting a JVM to ask costs ~40 ms of CPU per host.
  release=$(dirname "$(dirname "$(readlink -f "$java")")")/release
  grep -s '^JAVA_VERSION=' "$release" || "$java" -version 2>&1
fi

section listening; ss -Hltnp 2>/dev/null || ss -Hltn
section limits
if id "$EBR_SERVICE_USER" >/dev/null 2>&1; then
  echo "user=$EBR_SERVICE_USER"
  echo "nofile=$(su -s /bin/sh -c 'ulimit -n' "$EBR_SERVICE_USER" 2>/dev/null)"
else
  echo "user=absent"
  echo "nofile=$(ulimit -n)"
fi
echo "nr_open=$(cat /proc/sys/fs/nr_open 2>/dev/null)"
section sysctl
echo "vm.swappiness=$(cat /proc/sys/vm/swappiness 2>/dev/null)"
echo "vm.max_map_count=$(cat /proc/sys/vm/max_map_count 2>/dev/null)"
section addresses; ip -o addr show 2>/dev/null
# "<key> <answer>" per key. One getent for all keys answers one line per key it resolved, in order; only
# when some key failed is each looked up alone (a lookup per key costs each host O(hosts) processes).
resolve() {  # $1: field of the answer to print (1 address, 2 name); the keys follow
  field=$1; shift
  answers=$(getent hosts "$@")
  if [ "$(printf '%s\n' "$answers" | grep -c .)" -eq "$#" ]; then
    printf '%s\n' "$answers" | for key in "$@"; do
      read -r address name _
      if [ "$field" = 1 ]; then echo "$key $address"; else echo "$key $name"; fi
    done
  else
    for key in "$@"; do echo "$key $(getent hosts "$key" | awk -v f="$field" '{print $f}' | head -n 1)"; done
  fi
}
section resolve_forward
# shellcheck disable=SC2086 # the names and addresses are space separated on purpose
resolve 1 $EBR_NAMES
section resolve_reverse
# shellcheck disable=SC2086
resolve 2 $EBR_ADDRESSES
section tools
for tool in iperf3 python3 openssl; do
  if command -v "$tool" >/dev/null 2>&1; then echo "$tool=yes"; else echo "$tool=no"; fi
done
if [ "$EBR_MODE" = docker ]; then
  section docker; docker version --format '{{.Server.Version}}' 2>&1 || true
fi
if [ "$EBR_MODE" = kubernetes ]; then
  section kubernetes; kubectl version -o json 2>&1 || true
fi
section installed
for f in "$EBR_INSTALL_DIR"/share/java/kafka/kafka-clients-*.jar "$EBR_INSTALL_DIR"/libs/kafka-clients-*.jar; do
  [ -e "$f" ] && basename "$f"
done
true
