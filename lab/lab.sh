#!/usr/bin/env bash
# Local multi-host lab: N "hosts" on one machine, each a network namespace with its own
# address on a private bridge, its own sshd, and its own /opt, /etc/kafka, /var/lib/kafka, ...
# (bind mounts inside a private mount namespace). See lab/README.md.
#
#   lab.sh up [N]         bring up hosts lab1..labN (default $LAB_HOSTS or 3); idempotent, only adds
#   lab.sh down [--purge] stop every lab process, remove namespaces/veths/bridge (--purge: wipe host folders)
#   lab.sh status [--json]
#   lab.sh cut HOST       take the host's link down (connections time out)
#   lab.sh heal HOST      bring the link back and wait for ssh
#   lab.sh exec HOST CMD...  run a command on the host over ssh (host-key checking on)
#
# Only addresses inside 10.77.0.0/24 (created here, on this machine) are ever configured or targeted.
set -euo pipefail

readonly BRIDGE=ebrlab0
readonly SUBNET=10.77.0.0/24
readonly PREFIX=10.77.0
readonly GATEWAY=10.77.0.1
readonly BRIDGE_MAC=02:eb:00:00:00:01
readonly MAX_HOSTS=99
LAB_STATE=${LAB_STATE:-/var/lib/event-broker-lab}
LAB_STATE=${LAB_STATE%/}
SSHD=${SSHD:-/usr/sbin/sshd}

# path inside a host -> folder name under $LAB_STATE/hosts/lab<i>/root/
readonly MOUNT_PATHS=(/opt /etc/kafka /etc/schema-registry /etc/event-broker
                      /var/lib/kafka /var/lib/schema-registry /var/log /run/event-broker)

die() { echo "lab.sh: error: $*" >&2; exit 1; }
log() { echo "lab.sh: $*" >&2; }

folder_of() { local p=${1#/}; echo "${p//\//-}"; }      # /etc/kafka -> etc-kafka
host_addr() { echo "$PREFIX.$((10 + $1))"; }
host_ns()   { echo "ebr-lab$1"; }
host_veth() { echo "ebrv$1"; }
host_dir()  { echo "$LAB_STATE/hosts/lab$1"; }
host_mac()  { printf '02:eb:00:00:01:%02x' "$1"; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it creates network namespaces, veths, a bridge, bind mounts and runs sshd); try: sudo $0 $*"
}

# HOST may be lab3, 3, or 10.77.0.13 -> prints 3
parse_host() {
    local h=$1 i
    case $h in
        lab[0-9]*) i=${h#lab} ;;
        "$PREFIX".[0-9]*) i=$(( ${h##*.} - 10 )) ;;
        [0-9]*) i=$h ;;
        *) die "unknown host '$h' (expected labN, N or $PREFIX.(10+N))" ;;
    esac
    [[ $i =~ ^[0-9]+$ ]] && (( i >= 1 && i <= MAX_HOSTS )) || die "bad host '$h'"
    echo $((10#$i))
}

ns_exists() { [[ -e /run/netns/$(host_ns "$1") ]]; }

# indices of hosts whose netns exists, ascending
up_hosts() {
    local f
    for f in /run/netns/ebr-lab*; do
        [[ -e $f ]] || continue
        f=${f##*/ebr-lab}
        if [[ $f =~ ^[0-9]+$ ]]; then echo "$f"; fi
    done | sort -n
}

# indices of hosts known (netns or state folder), ascending
known_hosts_idx() {
    {
        up_hosts
        local d
        for d in "$LAB_STATE"/hosts/lab*; do
            [[ -d $d ]] || continue
            d=${d##*/lab}
            if [[ $d =~ ^[0-9]+$ ]]; then echo "$d"; fi
        done
    } | sort -nu
}

# The bridge, namespaces and addresses are machine-wide whatever LAB_STATE says, so one lock in /run
# (tmpfs, gone at reboot) serialises up/down; taking it creates nothing under LAB_STATE.
readonly LOCK_FILE=/run/event-broker-lab.lock
lock() {
    exec 8>"$LOCK_FILE"
    flock -w 300 8 || die "another lab.sh up/down holds $LOCK_FILE"
}

# sshd's StrictModes refuses keys below group/world-writable directories. One exception is as safe:
# a sticky, root-owned world-writable folder (/tmp) whose entry on the way is root's and private
# (what `mktemp -d` makes) -- nobody else can reach or swap anything below it. StrictModes cannot
# see that, so for such a state folder the lab's sshd runs with it off (STRICT_MODES=no); any
# other writable ancestor is refused.
STRICT_MODES=yes
check_state_dir() {
    [[ $LAB_STATE == /* ]] || die "LAB_STATE must be an absolute path (got '$LAB_STATE')"
    local p=$LAB_STATE mode owner below=''
    while [[ -n $p ]]; do
        if [[ -e $p ]]; then
            mode=$(stat -c %a "$p"); owner=$(stat -c %u "$p")
            if (( (8#$mode & 8#022) != 0 )); then
                if (( (8#$mode & 8#1000) != 0 )) && [[ $owner == 0 && -n $below ]] \
                    && [[ $(stat -c %u "$below") == 0 ]] && (( (8#$(stat -c %a "$below") & 8#077) == 0 )); then
                    STRICT_MODES=no
                else
                    die "LAB_STATE=$LAB_STATE: $p is group/world-writable (mode $mode); sshd StrictModes would refuse the keys. Use a path like /var/lib/event-broker-lab, or one inside a private folder such as \$(mktemp -d)/lab"
                fi
            fi
        fi
        below=$p
        p=${p%/*}
    done
}

json_str() {  # minimal JSON string escaping (paths/keys here contain no control chars)
    local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"
}

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

sshd_pid() {  # pid of host i's sshd, if running
    local pf; pf="$(host_dir "$1")/sshd.pid"
    [[ -s $pf ]] || return 1
    local pid; pid=$(<"$pf")
    pid_alive "$pid" || return 1
    # make sure the pid is really our sshd (not a recycled pid)
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(host_dir "$1")/sshd_config" || return 1
    echo "$pid"
}

ssh_answers() {  # TCP connect to port 22 with a timeout and read the SSH banner
    local addr=$1 banner
    banner=$(timeout 3 bash -c "exec 3<>/dev/tcp/$addr/22 && head -c 4 <&3" 2>/dev/null) || return 1
    [[ $banner == SSH- ]]
}

wait_ssh() {  # wait_ssh ADDR SECONDS
    local addr=$1 deadline=$((SECONDS + $2))
    until ssh_answers "$addr"; do
        (( SECONDS < deadline )) || return 1
        sleep 0.2
    done
}

# ---------------------------------------------------------------- keys & config

ensure_client_key() {
    mkdir -p "$LAB_STATE/ssh"
    chmod 700 "$LAB_STATE/ssh"
    if [[ ! -s $LAB_STATE/ssh/id_ed25519 ]]; then
        rm -f "$LAB_STATE/ssh/id_ed25519" "$LAB_STATE/ssh/id_ed25519.pub"
        ssh-keygen -q -t ed25519 -N '' -C event-broker-lab -f "$LAB_STATE/ssh/id_ed25519"
    fi
    chmod 600 "$LAB_STATE/ssh/id_ed25519"
    install -m 600 "$LAB_STATE/ssh/id_ed25519.pub" "$LAB_STATE/ssh/authorized_keys"
}

ensure_host_files() {  # per-host folders, host key, sshd config
    local i=$1 d p
    d=$(host_dir "$i")
    mkdir -p "$d/root"
    chmod 755 "$LAB_STATE" "$LAB_STATE/hosts" "$d"
    for p in "${MOUNT_PATHS[@]}"; do
        mkdir -p "$d/root/$(folder_of "$p")"
    done
    if [[ ! -s $d/ssh_host_ed25519_key ]]; then
        rm -f "$d/ssh_host_ed25519_key" "$d/ssh_host_ed25519_key.pub"
        ssh-keygen -q -t ed25519 -N '' -C "lab$i" -f "$d/ssh_host_ed25519_key"
    fi
    chmod 600 "$d/ssh_host_ed25519_key"
    cat >"$d/sshd_config.tmp" <<EOF
# generated by lab.sh for lab$i -- do not edit
ListenAddress $(host_addr "$i"):22
HostKey $d/ssh_host_ed25519_key
PidFile $d/sshd.pid
AuthorizedKeysFile $LAB_STATE/ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes $STRICT_MODES
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
ClientAliveInterval 15
ClientAliveCountMax 4
LoginGraceTime 30
MaxStartups 100:30:200
MaxSessions 64
MaxAuthTries 6
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
LogLevel INFO
EOF
    mv -f "$d/sshd_config.tmp" "$d/sshd_config"
    printf '# lab.sh: root on lab%s starts with the system defaults only\n' "$i" >"$d/shell-startup"
    chmod 644 "$d/shell-startup"
}

write_etc_hosts() {  # every host's /etc/hosts lists all hosts that are up (plus the one being added)
    local all=("$@") i j tmp
    for i in "${all[@]}"; do
        tmp="$(host_dir "$i")/etc-hosts.tmp"
        {
            echo "127.0.0.1 localhost"
            echo "::1 localhost ip6-localhost ip6-loopback"
            echo "$GATEWAY ebrlab-gw"
            for j in "${all[@]}"; do echo "$(host_addr "$j") lab$j"; done
        } >"$tmp"
        # no DNS in the lab: names come from /etc/hosts; lookups of anything else fail at once on the
        # host's own loopback instead of waiting for (and sending packets towards) an outside resolver
        printf '# lab.sh: no DNS inside the lab (names are in /etc/hosts)\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n' \
            >"$(host_dir "$i")/resolv.conf.tmp"
        if [[ -f $(host_dir "$i")/resolv.conf ]]; then
            cat "$(host_dir "$i")/resolv.conf.tmp" >"$(host_dir "$i")/resolv.conf"; rm -f "$(host_dir "$i")/resolv.conf.tmp"
        else
            chmod 644 "$(host_dir "$i")/resolv.conf.tmp"; mv -f "$(host_dir "$i")/resolv.conf.tmp" "$(host_dir "$i")/resolv.conf"
        fi
        # bind mounts pin the inode: rewrite in place so running hosts see the update
        if [[ -f $(host_dir "$i")/etc-hosts ]]; then
            cat "$tmp" >"$(host_dir "$i")/etc-hosts"; rm -f "$tmp"
        else
            chmod 644 "$tmp"; mv -f "$tmp" "$(host_dir "$i")/etc-hosts"
        fi
    done
}

write_known_hosts_and_json() {
    local idx=("$@") i d key kh="$LAB_STATE/ssh/known_hosts" cfg="$LAB_STATE/ssh/config" js="$LAB_STATE/lab.json"
    # known_hosts: every host that has a key (up or not), so it stays valid across up/down
    : >"$kh.tmp"; : >"$cfg.tmp"
    for i in $(known_hosts_idx); do
        d=$(host_dir "$i")
        [[ -s $d/ssh_host_ed25519_key.pub ]] || continue
        key=$(cut -d' ' -f1,2 "$d/ssh_host_ed25519_key.pub")
        echo "lab$i,$(host_addr "$i") $key" >>"$kh.tmp"
        printf 'Host lab%s\n  HostName %s\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n\n' \
            "$i" "$(host_addr "$i")" "$LAB_STATE/ssh/id_ed25519" "$kh" >>"$cfg.tmp"
    done
    chmod 644 "$kh.tmp" "$cfg.tmp"
    mv -f "$kh.tmp" "$kh"; mv -f "$cfg.tmp" "$cfg"

    {
        printf '{\n  "subnet": "%s",\n  "bridge": "%s",\n  "gateway": "%s",\n' "$SUBNET" "$BRIDGE" "$GATEWAY"
        printf '  "state_dir": %s,\n' "$(json_str "$LAB_STATE")"
        printf '  "ssh_key": %s,\n' "$(json_str "$LAB_STATE/ssh/id_ed25519")"
        printf '  "known_hosts": %s,\n' "$(json_str "$kh")"
        printf '  "ssh_user": "root",\n  "ssh_port": 22,\n'
        printf '  "hosts": ['
        local first=1 p sep
        for i in "${idx[@]}"; do
            d=$(host_dir "$i")
            key=$(cut -d' ' -f1,2 "$d/ssh_host_ed25519_key.pub")
            (( first )) || printf ','
            first=0
            printf '\n    {"name": "lab%s", "address": "%s", "netns": "%s", "host_key": %s, "root": %s,\n' \
                "$i" "$(host_addr "$i")" "$(host_ns "$i")" "$(json_str "$key")" "$(json_str "$d/root")"
            printf '     "mounts": {'
            sep=''
            for p in "${MOUNT_PATHS[@]}"; do
                printf '%s%s: %s' "$sep" "$(json_str "$p")" "$(json_str "$d/root/$(folder_of "$p")")"
                sep=', '
            done
            printf '}}'
        done
        printf '\n  ]\n}\n'
    } >"$js.tmp"
    chmod 644 "$js.tmp"
    mv -f "$js.tmp" "$js"
}

# ---------------------------------------------------------------- network

ensure_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge stp_state 0 forward_delay 0
        ip link set "$BRIDGE" address "$BRIDGE_MAC"
    fi
    # bridged lab traffic must not depend on the machine's iptables (br_netfilter)
    ip link set "$BRIDGE" type bridge nf_call_iptables 0 nf_call_ip6tables 0 nf_call_arptables 0 2>/dev/null || true
    sysctl -qw "net.ipv6.conf.$BRIDGE.disable_ipv6=1" 2>/dev/null || true
    ip addr replace "$GATEWAY/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # A fallback route that drops lab-subnet traffic when the bridge is gone, so nothing aimed at a lab
    # address can ever leave this machine (the bridge's own route, metric 0, wins while the lab is up).
    ip route replace blackhole "$SUBNET" metric 4242
}

ensure_netns() {
    local i=$1 ns veth addr
    ns=$(host_ns "$i"); veth=$(host_veth "$i"); addr=$(host_addr "$i")
    ns_exists "$i" || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
        ip netns exec "$ns" ip link del eth0 2>/dev/null || true
        ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$veth" master "$BRIDGE"
    sysctl -qw "net.ipv6.conf.$veth.disable_ipv6=1" 2>/dev/null || true
    ip link set "$veth" up
    ip netns exec "$ns" sh -c "
        sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1 2>/dev/null || true
        ip link set lo up
        [ \"\$(cat /sys/class/net/eth0/address)\" = $(host_mac "$i") ] || ip link set eth0 address $(host_mac "$i")
        ip addr replace $addr/24 dev eth0
        ip link set eth0 up
        ip route replace default via $GATEWAY dev eth0
    "
}

# Static neighbour entries: with no ARP involved, a cut host behaves like a dead link
# (connections time out) instead of failing fast with "No route to host".
ensure_neighbours() {
    local all=("$@") i j
    for i in "${all[@]}"; do
        ip neigh replace "$(host_addr "$i")" lladdr "$(host_mac "$i")" dev "$BRIDGE" nud permanent
        {
            echo "neigh replace $GATEWAY lladdr $BRIDGE_MAC dev eth0 nud permanent"
            for j in "${all[@]}"; do
                [[ $j == "$i" ]] && continue
                echo "neigh replace $(host_addr "$j") lladdr $(host_mac "$j") dev eth0 nud permanent"
            done
        } | ip -netns "$(host_ns "$i")" -batch -
    done
}

start_sshd() {
    local i=$1 d ns p binds=''
    d=$(host_dir "$i"); ns=$(host_ns "$i")
    sshd_pid "$i" >/dev/null && return 0
    rm -f "$d/sshd.pid"
    "$SSHD" -t -f "$d/sshd_config" || die "sshd config check failed for lab$i"
    for p in "${MOUNT_PATHS[@]}"; do
        binds+="mount --bind '$d/root/$(folder_of "$p")' '$p' && "
    done
    binds+="mount --bind '$d/etc-hosts' /etc/hosts && "
    # root's shell start-up as on a plain server: the machine's own (version managers, ~0.1 s of CPU per
    # remote command) stays on the machine, and a stale lock of theirs cannot hang the lab's SSH
    for p in /root/.bashrc /root/.profile; do
        if [[ -f $p ]]; then binds+="mount --bind '$d/shell-startup' '$p' && "; fi
    done
    binds+="mount --bind '$d/resolv.conf' /etc/resolv.conf && "
    # new mount + UTS namespace inside the netns; sshd daemonizes and keeps both alive
    ip netns exec "$ns" unshare -m -u --propagation private sh -c \
        "hostname lab$i && $binds exec '$SSHD' -f '$d/sshd_config' -E '$d/sshd.log'" 8>&- \
        || die "could not start sshd for lab$i (see $d/sshd.log)"
}

ensure_mountpoints() {  # bind-mount targets must exist in the (shared) root filesystem
    local p
    mkdir -p /run/sshd
    chmod 755 /run/sshd
    for p in "${MOUNT_PATHS[@]}"; do
        if [[ ! -e $p ]]; then
            mkdir -p "$p"
            echo "$p" >>"$LAB_STATE/created-mountpoints"
        fi
    done
}

# ---------------------------------------------------------------- commands

cmd_up() {
    local n=${1:-${LAB_HOSTS:-3}} i t0=$SECONDS
    [[ $n =~ ^[0-9]+$ ]] && (( n >= 1 && n <= MAX_HOSTS )) || die "host count must be 1..$MAX_HOSTS (got '$n')"
    check_state_dir
    lock
    mkdir -p "$LAB_STATE/hosts"
    chmod 755 "$LAB_STATE"
    for cmd in ip unshare ssh-keygen "$SSHD" flock timeout; do
        command -v "$cmd" >/dev/null || die "missing $cmd (apt-get install -y iproute2 openssh-server util-linux)"
    done
    ensure_client_key
    ensure_mountpoints
    if [[ $(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null) == 1 ]]; then
        log "warning: net.ipv4.ip_forward=1 on this machine: packets from lab hosts to outside addresses could be forwarded (lab.sh does not change it)"
    fi

    local want=() all=()
    for ((i = 1; i <= n; i++)); do want+=("$i"); done
    mapfile -t all < <( { printf '%s\n' "${want[@]}"; up_hosts; } | sort -nu)

    for i in "${want[@]}"; do ensure_host_files "$i"; done
    write_etc_hosts "${all[@]}"
    ensure_bridge
    for i in "${want[@]}"; do ensure_netns "$i"; done
    ensure_neighbours "${all[@]}"
    for i in "${want[@]}"; do start_sshd "$i"; done

    local failed=()
    for i in "${all[@]}"; do
        ns_exists "$i" || continue
        link_up "$i" || continue   # a cut host (not asked for) stays cut; 'heal' brings it back
        wait_ssh "$(host_addr "$i")" 20 || failed+=("lab$i")
    done
    write_known_hosts_and_json "${all[@]}"
    (( ${#failed[@]} == 0 )) || die "sshd did not answer on: ${failed[*]} (see $LAB_STATE/hosts/<host>/sshd.log)"

    for i in "${all[@]}"; do
        printf 'lab%-3s %-12s netns=%-10s sshd=%-7s ssh root@%s (key %s)\n' "$i" "$(host_addr "$i")" \
            "$(host_ns "$i")" "$(sshd_pid "$i" || echo dead)" "$(host_addr "$i")" "$LAB_STATE/ssh/id_ed25519"
    done
    echo "lab up: ${#all[@]} host(s) in $((SECONDS - t0))s; state $LAB_STATE/lab.json"
}

lab_pids() {  # every process in any of the given netns
    local ns
    for ns in "$@"; do ip netns pids "$ns" 2>/dev/null || true; done | sort -nu | tr '\n' ' '
}

# TERM every process in the lab's namespaces (sshd, sessions, JVMs started later), wait up to
# LAB_STOP_GRACE seconds (default 10) for all of them together, then KILL what is left.
kill_ns_procs() {
    local pids deadline grace=${LAB_STOP_GRACE:-10}
    (( $# )) || return 0
    pids=$(lab_pids "$@")
    [[ -n ${pids// } ]] || return 0
    kill -TERM $pids 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while pids=$(lab_pids "$@"); [[ -n ${pids// } ]] && (( SECONDS < deadline )); do
        kill -TERM $pids 2>/dev/null || true   # children forked meanwhile
        sleep 0.2
    done
    [[ -n ${pids// } ]] || return 0
    log "killing processes that ignored TERM for ${grace}s: $pids"
    deadline=$((SECONDS + 10))
    while pids=$(lab_pids "$@"); [[ -n ${pids// } ]] && (( SECONDS < deadline )); do
        kill -KILL $pids 2>/dev/null || true
        sleep 0.2
    done
    [[ -z ${pids// } ]] || log "processes still present after KILL: $pids"
}

cmd_down() {
    local purge=0 i ns d pid
    [[ ${1:-} == --purge ]] && purge=1
    [[ $# -eq 0 || $purge -eq 1 ]] || die "usage: lab.sh down [--purge]"
    lock
    local t0=$SECONDS idx=()
    mapfile -t idx < <(known_hosts_idx)
    # 1. processes: everything inside each lab netns (sshd, sessions, JVMs started later)
    local nss=()
    # (ebr-idp: the lab's identity host, event_broker_devtools.lab_identity_host, with the provider, the
    # Kerberos KDC and the directory, lives on the same bridge)
    mapfile -t nss < <(ip netns list 2>/dev/null | awk '$1 ~ /^ebr-(lab[0-9]+|idp)$/ {print $1}')
    kill_ns_procs "${nss[@]}"
    for i in "${idx[@]}"; do
        # an sshd whose netns went away some other way
        if pid=$(sshd_pid "$i"); then kill -KILL "$pid" 2>/dev/null || true; fi
        rm -f "$(host_dir "$i")/sshd.pid"
    done
    # 2. mounts: the private mount namespaces died with their processes; make sure nothing of
    #    LAB_STATE is mounted in this namespace either
    local m
    while read -r m; do
        if [[ -n $m ]]; then umount -l "$m" 2>/dev/null || log "could not unmount $m"; fi
    done < <(awk -v s="$LAB_STATE/" '{ mp=$5; gsub(/\\040/, " ", mp); if (index(mp "/", s) == 1 || index($4 "/", s) == 1) print mp }' /proc/self/mountinfo | sort -r)
    # 3. network
    for i in "${idx[@]}"; do
        ns=$(host_ns "$i")
        ip link del "$(host_veth "$i")" 2>/dev/null || true
        if ns_exists "$i"; then ip netns del "$ns" || log "could not delete netns $ns"; fi
    done
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^ebr-(lab|idp)' || true); do
        kill_ns_procs "$ns"; ip netns del "$ns" || log "could not delete netns $ns"
    done
    for m in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^ebrv([0-9]+|idp)$' || true); do
        ip link del "$m" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    # 4. runtime state: like a reboot, /run/event-broker is emptied; the rest is kept
    for i in "${idx[@]}"; do
        d=$(host_dir "$i")
        if [[ -d $d/root/run-event-broker ]]; then find "$d/root/run-event-broker" -mindepth 1 -delete; fi
    done
    if (( purge )); then
        rm -rf "$LAB_STATE/hosts"/lab*/root "$LAB_STATE/hosts"/lab*/etc-hosts "$LAB_STATE/hosts"/lab*/resolv.conf \
               "$LAB_STATE/hosts"/lab*/sshd.log
    fi
    # remove the (empty) mount points lab.sh created in the root filesystem for the bind mounts
    if [[ -f $LAB_STATE/created-mountpoints ]]; then
        sort -ru "$LAB_STATE/created-mountpoints" | while read -r m; do
            rmdir "$m" 2>/dev/null || true
            if [[ -e $m ]]; then echo "$m"; fi
        done >"$LAB_STATE/created-mountpoints.tmp"
        mv -f "$LAB_STATE/created-mountpoints.tmp" "$LAB_STATE/created-mountpoints"
        [[ -s $LAB_STATE/created-mountpoints ]] || rm -f "$LAB_STATE/created-mountpoints"
    fi
    if [[ -d $LAB_STATE/ssh ]]; then
        write_known_hosts_and_json   # lab.json: no hosts up
    fi
    echo "lab down in $((SECONDS - t0))s$( ((purge)) && echo ' (purged host folders)')"
}

link_flags() { ip -o link show "$(host_veth "$1")" 2>/dev/null | sed -n 's/^[0-9]*: [^<]*<\([^>]*\)>.*/\1/p'; }
link_up() { local f; f=$(link_flags "$1"); [[ ,$f, == *,UP,* ]]; }

host_status() {  # prints: idx up addr sshd_pid link nprocs
    local i=$1 up=down pid=- link=- n=0 flags
    if ns_exists "$i"; then
        up=up
        pid=$(sshd_pid "$i") || pid=dead
        n=$(ip netns pids "$(host_ns "$i")" 2>/dev/null | wc -l)
        flags=$(link_flags "$i")
        if [[ -z $flags ]]; then link=missing
        elif [[ ,$flags, == *,UP,* ]]; then link=ok
        else link=cut
        fi
    fi
    echo "$i $up $(host_addr "$i") $pid $link $n"
}

cmd_status() {
    local json=0 i up addr pid link n idx=()
    [[ ${1:-} == --json ]] && json=1
    mapfile -t idx < <(known_hosts_idx)
    local bridge=down
    ip link show "$BRIDGE" >/dev/null 2>&1 && bridge=up
    if (( json )); then
        printf '{"state_dir": %s, "bridge": "%s", "bridge_state": "%s", "hosts": [' "$(json_str "$LAB_STATE")" "$BRIDGE" "$bridge"
        local sep=''
        for i in "${idx[@]}"; do
            read -r i up addr pid link n < <(host_status "$i")
            printf '%s\n  {"name": "lab%s", "address": "%s", "netns": "%s", "state": "%s", "sshd_pid": %s, "sshd_alive": %s, "link": %s, "processes": %s}' \
                "$sep" "$i" "$addr" "$(host_ns "$i")" "$up" \
                "$([[ $pid =~ ^[0-9]+$ ]] && echo "$pid" || echo null)" \
                "$([[ $pid =~ ^[0-9]+$ ]] && echo true || echo false)" \
                "$([[ $link == - ]] && echo null || echo "\"$link\"")" "$n"
            sep=','
        done
        printf '\n]}\n'
        return
    fi
    echo "bridge $BRIDGE: $bridge   state: $LAB_STATE"
    printf '%-6s %-5s %-12s %-8s %-6s %s\n' HOST STATE ADDRESS SSHD LINK PROCS
    for i in "${idx[@]}"; do
        read -r i up addr pid link n < <(host_status "$i")
        printf '%-6s %-5s %-12s %-8s %-6s %s\n' "lab$i" "$up" "$addr" "$pid" "$link" "$n"
    done
    (( ${#idx[@]} )) || echo "(no lab hosts)"
}

cmd_cut() {
    [[ $# -eq 1 ]] || die "usage: lab.sh cut HOST"
    local i; i=$(parse_host "$1")
    ns_exists "$i" || die "lab$i is not up"
    ip link set "$(host_veth "$i")" down
    echo "lab$i ($(host_addr "$i")) cut: link down, connections time out"
}

cmd_heal() {
    [[ $# -eq 1 ]] || die "usage: lab.sh heal HOST"
    local i; i=$(parse_host "$1")
    ns_exists "$i" || die "lab$i is not up"
    ip link set "$(host_veth "$i")" up
    wait_ssh "$(host_addr "$i")" 20 || die "lab$i: link up but ssh does not answer"
    echo "lab$i ($(host_addr "$i")) healed: ssh answers"
}

cmd_exec() {
    [[ $# -ge 2 ]] || die "usage: lab.sh exec HOST CMD..."
    local i; i=$(parse_host "$1"); shift
    [[ -s $LAB_STATE/ssh/known_hosts ]] || die "no $LAB_STATE/ssh/known_hosts; run 'lab.sh up' first"
    # arguments are joined by ssh like any ssh command line (so 'a; b' works)
    exec ssh -i "$LAB_STATE/ssh/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes \
        -o UserKnownHostsFile="$LAB_STATE/ssh/known_hosts" -o StrictHostKeyChecking=yes \
        -o ConnectTimeout=10 -o LogLevel=ERROR -- "root@$(host_addr "$i")" "$@"
}

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

main() {
    local cmd=${1:-}
    [[ -n $cmd ]] || { usage; exit 2; }
    shift
    case $cmd in
        -h|--help|help) usage; return ;;
    esac
    require_root "$cmd" "$@"
    case $cmd in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        status) cmd_status "$@" ;;
        cut) cmd_cut "$@" ;;
        heal) cmd_heal "$@" ;;
        exec) cmd_exec "$@" ;;
        *) usage; exit 2 ;;
    esac
}

main "$@"
