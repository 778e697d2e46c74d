#!/usr/bin/env bash
# Runs tokengate's benchmark against OpenSSH: installs what it needs, builds
# the gateway and the bench program, and runs every case on 127.0.0.1.
#
#   bench/run.sh [results.json]      full run (under ~30 minutes on 2 cores)
#   BENCH_QUICK=1 bench/run.sh       smoke test (under ~3 minutes)
#
# Everything it starts (redis-server, the gateway, a throwaway sshd) is
# stopped, and every temporary file removed, when it ends, also on failure.
set -euo pipefail

cd "$(dirname "$0")/.."
out=${1:-${BENCH_OUT:-bench/results.json}}

if [ "$(id -u)" -ne 0 ]; then
	echo "bench: run as root: the gateway builds a jail per session, and sshd needs root" >&2
	exit 1
fi

./scripts/deps.sh
# openssh-server provides the throwaway sshd the gateway is compared with.
# A policy-rc.d that refuses (101) keeps its package from starting the
# system's sshd: this bench never touches port 22.
if [ ! -x /usr/sbin/sshd ]; then
	echo "bench: installing openssh-server (its service is not started)"
	made_policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made_policy=1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server
	[ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
for tool in setpriv /usr/bin/rrsync; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done

# The data lives on tmpfs when it has room, so that the disk (shared with
# whatever else runs here) is not what gets measured; BENCH_TMPDIR picks
# another place. The binaries go to a disk temp dir (tmpfs may be noexec).
need_kib=$((6 << 20))
[ "${BENCH_QUICK:-}" != 1 ] || need_kib=$((1 << 20))
base=${BENCH_TMPDIR:-}
if [ -z "$base" ]; then
	base=${TMPDIR:-/tmp}
	free_kib=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
	if [ -n "$free_kib" ] && [ "$free_kib" -ge "$need_kib" ]; then
		base=/dev/shm
	fi
fi
bin="" tmp="" pid=""
cleanup() {
	# The bench stops its own processes; this is the backstop for a kill.
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	[ -z "$tmp" ] || rm -rf "$tmp"
	[ -z "$bin" ] || rm -rf "$bin"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
bin=$(mktemp -d "${TMPDIR:-/tmp}/tokengate-bench-bin.XXXXXX")
tmp=$(mktemp -d "$base/tokengate-bench.XXXXXX")
# rrsync runs as the jail uid and must get through to its data dir below.
chmod 711 "$tmp"

go build -o "$bin/gateway" ./cmd/gateway
go build -o "$bin/bench" ./bench
"$bin/bench" -gateway "$bin/gateway" -work "$tmp/work" -out "$out" &
pid=$!
wait "$pid"
