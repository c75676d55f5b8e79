#!/usr/bin/env bash
# Stops every process up.sh started, by pid (each runs in its own session, so its whole process
# group goes), and removes the environment's directory.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

# Whether process PID is still one of ours (pid files can outlive their processes, and pids are reused):
# its command line or environment carries MARKER.
ours() { # pid marker
  local seen
  seen=$({ tr '\0' '\n' <"/proc/$1/cmdline"; tr '\0' '\n' <"/proc/$1/environ"; } 2>/dev/null)
  [[ "$seen" == *"$2"* ]]
}

stop() { # pid [marker]
  local pid=$1 i
  ours "$pid" "${2:-$S3FLOW_ENV_DIR}" || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
}

[ -d "$S3FLOW_ENV_DIR" ] || exit 0
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  f=$S3FLOW_ENV_DIR/pids/${COMPONENTS[i]}.pid
  [ -f "$f" ] && stop "$(cat "$f")"
done
# Anything else started into the environment (the demo's source, say).
for f in "$S3FLOW_ENV_DIR"/pids/*.pid; do [ -f "$f" ] && stop "$(cat "$f")"; done
# Pod processes the node agent could not stop itself.
for f in "$S3FLOW_ENV_DIR"/node/pods/*/containers/*/pid; do
  [ -f "$f" ] && stop "$(cat "$f")" "KUBERNETES_SERVICE_PORT=$APISERVER_PORT"
done
rm -rf "$S3FLOW_ENV_DIR"
log "environment stopped"
