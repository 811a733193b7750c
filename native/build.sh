#!/usr/bin/env bash
# Build the Kafka client stack with Kerberos (SASL/GSSAPI) for this project:
#   1. librdkafka 2.15.1 with GSSAPI (Cyrus SASL + MIT krb5), SSL, SCRAM,
#      OAUTHBEARER/OIDC, zstd, lz4, zlib, from the C sources bundled in the npm
#      package @confluentinc/kafka-javascript@1.10.1 (deps/librdkafka), sha256-pinned;
#   2. the plugin kerberos_ccache_plugin.c -> $PREFIX/lib/ebr-kerberos-ccache.so
#      (one Kerberos credential cache per Kafka client, see README.md);
#   3. confluent-kafka 2.15.1 from its PyPI sdist (sha256-pinned) into $PYTHON's
#      venv, linked to $PREFIX/lib (RUNPATH). The PyPI wheel has no GSSAPI.
# Idempotent: what is already in place (and checked to work) is not rebuilt.
#
# Env: PYTHON  the project's venv python            (default <repo>/.venv/bin/python)
#      PREFIX  install dir, absolute                  (default <repo>/.cache/librdkafka-gssapi)
#      WORK    scratch dir for sources/logs           (default $PREFIX.build)
#      JOBS    make parallelism                       (default nproc)
# Needs the Debian packages that provide the headers checked below (installed elsewhere).
set -euo pipefail

CK_VERSION=2.15.1
CK_SDIST_SHA256=99d1223020e27854e75981333983c5120d64762268f8afcc805fbd62e7de49aa
NPM_SPEC=@confluentinc/kafka-javascript@1.10.1
NPM_TGZ=confluentinc-kafka-javascript-1.10.1.tgz
NPM_TGZ_SHA256=ada7d703bb1d3237e2292bfabf438d663b6160c9f1ac2a2406b5dc4257c81b66
RDK_HEX=0x020f01ff # librdkafka 2.15.1, as bundled in that npm package
RDK_FEATURES=gzip,ssl,sasl_gssapi,sasl_scram,sasl_oauthbearer,http,oidc,zstd,lz4,plugins
PLUGIN_NAME=ebr-kerberos-ccache.so

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO="$(dirname -- "$HERE")"
PLUGIN_SRC="$HERE/kerberos_ccache_plugin.c"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
PREFIX="${PREFIX:-$REPO/.cache/librdkafka-gssapi}"
JOBS="${JOBS:-$(nproc)}"

die() { echo "build.sh: ERROR: $*" >&2; exit 1; }
case "$PREFIX" in /*) ;; *) die "PREFIX must be an absolute path: $PREFIX" ;; esac
PREFIX="$(realpath -m -- "$PREFIX")"
case "$PREFIX" in / | /usr | /usr/* | /opt | /etc | /etc/*) die "refusing PREFIX=$PREFIX (use a private dir)" ;; esac
WORK="$(realpath -m -- "${WORK:-$PREFIX.build}")"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "JOBS must be a positive integer"
[[ -x "$PYTHON" ]] || die "PYTHON=$PYTHON is not an executable (create the project venv first)"
PLUGIN="$PREFIX/lib/$PLUGIN_NAME"
LOGS="$WORK/logs"

# ------------------------------------------------------------------ output: one line per step
T0=$EPOCHREALTIME
secs() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
step() { # step LABEL function [args...]: runs it quietly (logs in $LOGS), prints "LABEL  N.Ns"
        local label=$1 t=$EPOCHREALTIME
        shift
        "$@"
        printf '  %-26s %6ss\n' "$label" "$(secs "$t")"
}
fail_log() { tail -n 25 -- "$1" >&2; die "$2 (full log: $1)"; }

# ------------------------------------------------------------------ state checks (one python run)
# Prints "rdk=0|1 ck=0|1 plugin=0|1": librdkafka in PREFIX has the wanted version and features;
# confluent-kafka in the venv has CK_VERSION and loads librdkafka from PREFIX; the plugin loads and
# claims ebr.kerberos.ccache (a client without it must reject the property). No network I/O.
probe() {
        env -u LD_LIBRARY_PATH P_PREFIX="$PREFIX" P_CK="$CK_VERSION" P_HEX="$RDK_HEX" \
                P_FEATURES="$RDK_FEATURES" P_PLUGIN="$PLUGIN" "$PYTHON" - <<'PYEOF'
import ctypes, os
E = os.environ
prefix, plugin = E["P_PREFIX"], E["P_PLUGIN"]
rdk = ck = plug = 0
try:
    lib = ctypes.CDLL(os.path.join(prefix, "lib", "librdkafka.so.1"))
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.POINTER(ctypes.c_size_t)]
    lib.rd_kafka_conf_destroy.argtypes = [ctypes.c_void_p]
    conf = lib.rd_kafka_conf_new()
    buf, n = ctypes.create_string_buffer(1024), ctypes.c_size_t(1024)
    lib.rd_kafka_conf_get(conf, b"builtin.features", buf, ctypes.byref(n))
    lib.rd_kafka_conf_destroy(conf)
    rdk = int(lib.rd_kafka_version() == int(E["P_HEX"], 16)
              and set(E["P_FEATURES"].split(",")) <= set(buf.value.decode().split(",")))
except OSError:
    pass
if rdk:
    try:
        import confluent_kafka
        from confluent_kafka import KafkaException, Producer
        maps = [l.split()[-1] for l in open("/proc/self/maps") if "librdkafka" in l]
        v = confluent_kafka.version()  # a str in some releases, (str, int) in others
        ck = int((v[0] if isinstance(v, tuple) else v) == E["P_CK"]
                 and confluent_kafka.libversion()[1] == int(E["P_HEX"], 16)
                 and bool(maps) and all(os.path.realpath(m).startswith(prefix + "/lib/") for m in maps))
    except ImportError:
        pass
if ck and os.path.isfile(plugin):
    base = {"security.protocol": "sasl_plaintext", "sasl.mechanisms": "GSSAPI",
            "sasl.kerberos.min.time.before.relogin": 0, "log_level": 0}
    try:
        Producer({**base, "plugin.library.paths": plugin, "ebr.kerberos.ccache": "FILE:/dev/null"}).flush(0)
        try:
            Producer({**base, "ebr.kerberos.ccache": "FILE:/dev/null"})
        except KafkaException:
            plug = 1
    except KafkaException:
        pass
print(f"rdk={rdk} ck={ck} plugin={plug}")
PYEOF
}
sha_of() { sha256sum -- "$1" | cut -d' ' -f1; }
plugin_stamp() { printf '%s %s\n' "$(sha_of "$PLUGIN_SRC")" "$(sha_of "$0")"; }

state="$(probe)"
if [[ "$state" == "rdk=1 ck=1 plugin=1" && -f "$PLUGIN.stamp" && "$(cat -- "$PLUGIN.stamp")" == "$(plugin_stamp)" ]]; then
        echo "build.sh: up to date: confluent-kafka $CK_VERSION + librdkafka 2.15.1 (GSSAPI) + $PLUGIN_NAME in $PREFIX ($(secs "$T0")s)"
        exit 0
fi
NEED_RDK=1 NEED_CK=1 NEED_PLUGIN=1
[[ "$state" == rdk=1* ]] && NEED_RDK=0
[[ "$state" == "rdk=1 ck=1"* ]] && NEED_CK=0
[[ "$NEED_RDK" == 0 && -f "$PLUGIN" && -f "$PLUGIN.stamp" && "$(cat -- "$PLUGIN.stamp")" == "$(plugin_stamp)" ]] && NEED_PLUGIN=0
echo "build.sh: building into $PREFIX (librdkafka: $((NEED_RDK)), plugin: $((NEED_PLUGIN)), confluent-kafka: $((NEED_CK)); logs in $LOGS)"

# ------------------------------------------------------------------ prerequisites (no apt here)
check_prereqs() {
        local missing=() pair hdr pkg
        for pair in sasl/sasl.h:libsasl2-dev gssapi/gssapi_krb5.h:libkrb5-dev openssl/ssl.h:libssl-dev \
                zlib.h:zlib1g-dev zstd.h:libzstd-dev lz4frame.h:liblz4-dev curl/curl.h:libcurl4-openssl-dev; do
                hdr=${pair%%:*} pkg=${pair#*:}
                printf '#include <%s>\n' "$hdr" | cc -E -x c - >/dev/null 2>&1 || missing+=("<$hdr> ($pkg)")
        done
        ((${#missing[@]} == 0)) || die "missing C headers: ${missing[*]}"
        local tool
        for tool in cc make npm; do command -v "$tool" >/dev/null || die "missing tool: $tool"; done
        command -v kinit >/dev/null || die "missing kinit (krb5-user): clients run it to get tickets"
        compgen -G '/usr/lib/*/sasl2/libgssapiv2.so*' >/dev/null ||
                die "missing the Cyrus SASL GSSAPI module (libsasl2-modules-gssapi-mit)"
        "$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
                die "missing Python.h for $PYTHON"
        "$PYTHON" -m pip --version >/dev/null 2>&1 || die "no pip in $PYTHON's venv"
        mkdir -p -- "$LOGS" "$WORK/dl"
}
step prerequisites check_prereqs

# ------------------------------------------------------------------ librdkafka
RDK_DIR="$WORK/src/package/deps/librdkafka"
fetch_rdk() {
        local tgz="$WORK/dl/$NPM_TGZ"
        if [[ ! -f "$tgz" || "$(sha_of "$tgz")" != "$NPM_TGZ_SHA256" ]]; then
                rm -f -- "$tgz"
                npm pack --silent --pack-destination "$WORK/dl" -- "$NPM_SPEC" >"$LOGS/npm-pack.log" 2>&1 ||
                        fail_log "$LOGS/npm-pack.log" "npm pack $NPM_SPEC failed"
        fi
        [[ "$(sha_of "$tgz")" == "$NPM_TGZ_SHA256" ]] || die "sha256 mismatch for $tgz (expected $NPM_TGZ_SHA256)"
        rm -rf -- "$WORK/src"
        mkdir -p -- "$WORK/src"
        tar -xzf "$tgz" -C "$WORK/src" package/deps/librdkafka
        grep -q "^#define RD_KAFKA_VERSION $RDK_HEX\$" "$RDK_DIR/src/rdkafka.h" || die "unexpected librdkafka version in $NPM_TGZ"
}
configure_rdk() {
        # --enable-X (not "try"): configure fails if a dependency is missing. No --install-deps.
        (cd -- "$RDK_DIR" && ./configure --prefix="$PREFIX" --enable-gssapi --enable-ssl --enable-curl \
                --enable-zstd --enable-zlib --enable-lz4-ext --disable-debug-symbols) >"$LOGS/configure.log" 2>&1 ||
                fail_log "$LOGS/configure.log" "librdkafka configure failed"
}
make_rdk() { # the C library only (src/): no C++, examples or tests
        make -j"$JOBS" -C "$RDK_DIR/src" lib >"$LOGS/make.log" 2>&1 || fail_log "$LOGS/make.log" "librdkafka make failed"
}
install_rdk() {
        rm -rf -- "$PREFIX/lib/librdkafka"* "$PREFIX/include/librdkafka"
        make -C "$RDK_DIR/src" install >"$LOGS/install.log" 2>&1 || fail_log "$LOGS/install.log" "librdkafka install failed"
}
if ((NEED_RDK)); then
        step "librdkafka: npm pack+sha256" fetch_rdk
        step "librdkafka: configure" configure_rdk
        step "librdkafka: make" make_rdk
        step "librdkafka: install" install_rdk
fi

# ------------------------------------------------------------------ plugin
build_plugin() {
        local tmp="$PLUGIN.tmp.$$"
        # -isystem: rdkafka.h itself trips -Wextra (ignored-qualifiers); our code is held to -Werror.
        cc -std=c11 -O2 -g -fPIC -shared -Wall -Wextra -Werror -Wl,--no-undefined -Wl,-z,relro,-z,now \
                -isystem "$PREFIX/include" -o "$tmp" "$PLUGIN_SRC" \
                -L"$PREFIX/lib" -Wl,-rpath,"$PREFIX/lib" -lrdkafka -lgssapi_krb5 >"$LOGS/plugin.log" 2>&1 ||
                { rm -f -- "$tmp"; fail_log "$LOGS/plugin.log" "plugin compile failed"; }
        mv -f -- "$tmp" "$PLUGIN"
        plugin_stamp >"$PLUGIN.stamp"
}
if ((NEED_PLUGIN)); then step "plugin: compile" build_plugin; fi

# ------------------------------------------------------------------ confluent-kafka
CK_SDIST="$WORK/dl/confluent_kafka-$CK_VERSION.tar.gz"
fetch_ck() {
        if [[ ! -f "$CK_SDIST" || "$(sha_of "$CK_SDIST")" != "$CK_SDIST_SHA256" ]]; then
                rm -f -- "$CK_SDIST"
                printf 'confluent-kafka==%s --hash=sha256:%s\n' "$CK_VERSION" "$CK_SDIST_SHA256" >"$WORK/dl/ck-req.txt"
                "$PYTHON" -m pip download -q --no-deps --no-binary confluent-kafka --require-hashes -d "$WORK/dl" \
                        -r "$WORK/dl/ck-req.txt" >"$LOGS/pip-download.log" 2>&1 ||
                        fail_log "$LOGS/pip-download.log" "pip download confluent-kafka==$CK_VERSION failed"
        fi
        [[ "$(sha_of "$CK_SDIST")" == "$CK_SDIST_SHA256" ]] || die "sha256 mismatch for $CK_SDIST"
}
build_ck() {
        # --no-cache-dir: never reuse a wheel built against another PREFIX.
        CFLAGS="-I$PREFIX/include" LDFLAGS="-L$PREFIX/lib -Wl,-rpath,$PREFIX/lib" \
                "$PYTHON" -m pip install -q --no-cache-dir --no-deps --no-binary confluent-kafka \
                --force-reinstall "$CK_SDIST" >"$LOGS/pip-build.log" 2>&1 ||
                fail_log "$LOGS/pip-build.log" "building confluent-kafka $CK_VERSION from sdist failed"
}
if ((NEED_CK)); then
        step "confluent-kafka: sdist" fetch_ck
        step "confluent-kafka: build" build_ck
fi

# ------------------------------------------------------------------ verify
verify() {
        state="$(probe)"
        [[ "$state" == "rdk=1 ck=1 plugin=1" ]] || die "verification failed: $state"
}
step verify verify
echo "build.sh: done in $(secs "$T0")s: confluent-kafka $CK_VERSION, librdkafka 2.15.1 (GSSAPI), $PLUGIN"
