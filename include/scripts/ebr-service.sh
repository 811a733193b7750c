#!/bin/sh
# ebr-service: a small pidfile-based service manager for hosts without systemd (the lab).
#   ebr-service start|stop|restart|status|pid|started NAME
# Reads /etc/event-broker/services/NAME.conf (written by the rollout). The process runs detached (new
# session), as the service user, with the service's open-file limit, and outlives the SSH session.
# status exits 0 when running, 3 when stopped (as LSB init scripts do).
set -eu
CONF_DIR=${EBR_SERVICE_CONF_DIR:-/etc/event-broker/services}
RUN_DIR=${EBR_SERVICE_RUN_DIR:-/run/event-broker}
action=${1:?usage: ebr-service start|stop|restart|status|pid|started NAME}
name=${2:?service name}
conf="$CONF_DIR/$name.conf"
pidfile="$RUN_DIR/$name.pid"
[ -r "$conf" ] || { echo "ebr-service: no service $name ($conf)" >&2; exit 2; }
# shellcheck disable=SC1090
. "$conf"

running_pid() {
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

start() {
  if pid=$(running_pid); then echo "$name already running (pid $pid)"; return 0; fi
  mkdir -p "$RUN_DIR" "$(dirname "$LOG_FILE")"
  chown "$SERVICE_USER" "$(dirname "$LOG_FILE")"
  # As systemd's LimitNOFILE would; where the hard limit is lower and cannot be raised, take the hard limit.
  if ! ulimit -n "$NOFILE" 2>/dev/null; then
    echo "$name: open-file limit $NOFILE not allowed here; using the hard limit $(ulimit -Hn)" >&2
    ulimit -n "$(ulimit -Hn)"
  fi
  # setsid and setpriv exec in place, as does the start script: the recorded pid is the JVM's.
  (
    set -a; . "$ENV_FILE"; set +a
    exec setsid setpriv --reuid="$SERVICE_USER" --regid="$SERVICE_USER" --init-groups -- \
      /bin/sh -c "exec $EXEC_START" </dev/null >>"$LOG_FILE" 2>&1
  ) &
  echo $! > "$pidfile"
  sleep 1
  if pid=$(running_pid); then echo "$name started (pid $pid)"; return 0; fi
  echo "$name failed to start; last lines of $LOG_FILE:" >&2
  tail -n 20 "$LOG_FILE" >&2 || true
  return 1
}

stop() {
  if ! pid=$(running_pid); then echo "$name not running"; rm -f "$pidfile"; return 0; fi
  kill -TERM "$pid"
  waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge "$STOP_TIMEOUT" ]; then kill -KILL "$pid"; break; fi
    sleep 1; waited=$((waited + 1))
  done
  rm -f "$pidfile"
  echo "$name stopped"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if pid=$(running_pid); then echo "$name running (pid $pid)"; else echo "$name stopped"; exit 3; fi ;;
  pid) running_pid || exit 3 ;;
  started) pid=$(running_pid) || exit 3; ps -o lstart= -p "$pid" ;;
  *) echo "ebr-service: unknown action $action" >&2; exit 2 ;;
esac
