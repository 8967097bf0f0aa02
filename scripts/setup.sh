#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, Node 24, npm ci, BPF objects.
# Quiet when everything is already there. Called by scripts/demo and scripts/test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$NODEMESH_ROOT"

# Debian packages the datapath, the sandbox and the tests use.
# clang/llvm/libbpf-dev/bpftool build and inspect BPF; libbpf1 is loaded by the binding;
# iproute2/nftables/iptables build the sandbox; curl/tcpdump/procps are used by tests and the demo;
# nginx-light/haproxy/wrk are the peers and the load generator of `npm run bench:l7`; nghttp2-client gives h2load
# (test/integration/l7-load.test.ts: 32 HTTP/2 connections × 100 streams through the proxy).
PACKAGES=(clang llvm clang-format libbpf-dev libbpf1 bpftool iproute2 nftables iptables curl tcpdump procps util-linux ca-certificates nginx-light haproxy wrk nghttp2-client)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "missing Debian packages (${missing[*]}); run as root or install them"; exit 1; }
  log "installing Debian packages: ${missing[*]}"
  stamp=/var/lib/apt/periodic/nodemesh-update-stamp
  if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +720 2>/dev/null)" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    mkdir -p "$(dirname "$stamp")" && touch "$stamp"
  fi
  apt_log=$(mktemp)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1 \
    || { cat "$apt_log"; rm -f "$apt_log"; log "apt-get install failed"; exit 1; }
  rm -f "$apt_log"
fi
command -v kubectl >/dev/null || log "warning: kubectl is not on PATH; the sandbox works, but the kubectl tests and demo steps need it"

ensure_node

# npm ci only when the lockfile changed since the last install.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f node_modules/.nodemesh-lock ] || [ "$(cat node_modules/.nodemesh-lock)" != "$lock_sum" ]; then
  log "installing npm dependencies (npm ci)"
  npm ci --silent --no-fund --no-audit >/dev/null 2>&1 || npm ci --no-fund --no-audit
  echo "$lock_sum" > node_modules/.nodemesh-lock
fi

# BPF objects (make is incremental).
if [ -f bpf/Makefile ]; then
  make -s -C bpf
fi
