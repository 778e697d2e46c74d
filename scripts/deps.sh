#!/bin/sh
# Installs what tokengate's tests and `make dev` need, from Debian packages,
# when it is missing: rsync (3.4.0 or newer), the OpenSSH client, sshpass,
# redis-server and redis-cli. Needs root (or sudo) only if something is missing.
set -eu

need=""
command -v rsync >/dev/null 2>&1 || need="$need rsync"
command -v ssh >/dev/null 2>&1 || need="$need openssh-client"
command -v sshpass >/dev/null 2>&1 || need="$need sshpass"
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
command -v redis-cli >/dev/null 2>&1 || need="$need redis-tools"

if [ -n "$need" ]; then
	echo "deps: installing:$need"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $need
fi

# redis-server's package may start a system instance; tests start their own
# on free loopback ports and never use it.
rsync --version | head -n 1
