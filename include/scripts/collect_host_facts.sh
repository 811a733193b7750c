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
if [ -n "$EBR_JAVA_HOME" ] && [ -x "$EBR_JAVA_HOME/bin/java" ]; then
  "$EBR_JAVA_HOME/bin/java" -version 2>&1
elif command -v java >/dev/null 2>&1; then
  java -version 2>&1
else
  echo "java: not found"
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
section resolve_forward
for name in $EBR_NAMES; do echo "$name $(getent hosts "$name" | awk '{print $1}' | head -n 1)"; done
section resolve_reverse
for address in $EBR_ADDRESSES; do echo "$address $(getent hosts "$address" | awk '{print $2}' | head -n 1)"; done
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
