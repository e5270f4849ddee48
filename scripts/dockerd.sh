#!/usr/bin/env bash
# Start a Docker daemon for the docker runtime's tests, unless one already answers.
#
#   scripts/dockerd.sh          start (idempotent); exit 0 once `docker` answers
#   scripts/dockerd.sh stop     stop the daemon this script started (and only that one)
#   scripts/dockerd.sh status   exit 0 when a daemon answers on /var/run/docker.sock
#
# Root only. The daemon is started so that it changes as little as possible on the machine:
# no default bridge (a container gets a network only when asked), no NAT (no masquerading)
# and IP forwarding left as it is (off on a machine that does not route). Its iptables rules
# stay on: they are what makes an `--internal` network internal, and the tests put every
# container on one.
set -euo pipefail

SOCK=/var/run/docker.sock
PIDFILE=/var/run/lanray-dockerd.pid
LOG=${LANRAY_DOCKERD_LOG:-/var/log/lanray-dockerd.log}
export DOCKER_HOST=unix://$SOCK

say() { echo "dockerd.sh: $*" >&2; }

answers() {
  # the socket answers the API's ping: a running daemon, whoever started it
  command -v curl >/dev/null &&
    curl -fsS --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1 && return 0
  command -v docker >/dev/null && timeout 5 docker version >/dev/null 2>&1
}

ours() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-start}" in
  status)
    answers
    ;;
  stop)
    if ! ours; then
      say "no daemon started by this script runs"
      exit 0
    fi
    pid=$(cat "$PIDFILE")
    kill -TERM "$pid"
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "dockerd (pid $pid) did not stop within 15 s"
      exit 1
    fi
    rm -f "$PIDFILE"
    say "stopped dockerd (pid $pid)"
    ;;
  start)
    if answers; then
      exit 0
    fi
    if [ "$(id -u)" != 0 ]; then
      say "no Docker daemon answers on $SOCK and starting one needs root"
      exit 1
    fi
    if ! command -v dockerd >/dev/null; then
      if command -v apt-get >/dev/null; then
        say "installing docker.io"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
      else
        say "dockerd is not installed and apt-get is not available"
        exit 1
      fi
    fi
    if ours; then
      say "dockerd (pid $(cat "$PIDFILE")) runs but does not answer yet"
    else
      # a socket left by a daemon that died would make the new one refuse to start
      [ -S "$SOCK" ] && rm -f "$SOCK"
      # a clean environment: dockerd and runc keep state under XDG_RUNTIME_DIR when it is set
      # (a test's temporary dir, say), which breaks `docker exec` once that dir is gone
      env -i PATH="$PATH" setsid dockerd \
        --host "unix://$SOCK" \
        --pidfile /var/run/docker.pid \
        --bridge none \
        --ip-forward=false \
        --ip-masq=false \
        </dev/null >>"$LOG" 2>&1 &
      echo $! >"$PIDFILE"
    fi
    for _ in $(seq 1 300); do
      if answers; then
        say "dockerd runs (pid $(cat "$PIDFILE"), log $LOG)"
        exit 0
      fi
      if ! ours; then
        say "dockerd exited at start: $(tail -n 1 "$LOG" 2>/dev/null)"
        rm -f "$PIDFILE"
        exit 1
      fi
      sleep 0.1
    done
    say "dockerd did not answer within 30 s (see $LOG)"
    exit 1
    ;;
  *)
    say "usage: $0 [start|stop|status]"
    exit 2
    ;;
esac
