#!/usr/bin/env bash
# Debian packages the project needs on the Airflow side and, through the shared /usr, on the lab hosts.
# Idempotent: installs only what is missing. Needs root (apt-get).
set -euo pipefail
packages=(openssh-server openssh-client iproute2 kcat iperf3 openssl netcat-openbsd procps util-linux
          chromium curl jq docker-compose
          postgresql redis-server   # the distributed Airflow (make airflow-up EXECUTOR=celery); neither is started here
          krb5-kdc krb5-admin-server krb5-user libsasl2-modules-gssapi-mit  # the lab's KDC; kinit and GSSAPI for clients
          slapd ldap-utils   # the lab's directory (run by event_broker_devtools.lab_directory, never as a system service)
          # to build the Kafka client library with GSSAPI (native/build.sh): the wheel's has none
          build-essential libsasl2-dev libkrb5-dev libssl-dev zlib1g-dev libzstd-dev liblz4-dev libcurl4-openssl-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]} — run 'make packages' as root" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
