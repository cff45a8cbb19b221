#!/bin/sh
# systemctl for test-rack nodes, which run no systemd: just enough of it for
# the k3s install script (daemon-reload, enable, start, restart, stop,
# is-active). A service runs its unit's ExecStart in a session of its own.
# Mutating calls are appended to /var/log/standin-systemctl.log.
set -eu
cmd=${1:-}
[ $# -gt 0 ] && shift
quiet=false
while [ $# -gt 0 ]; do
  case "$1" in
    -q | --quiet) quiet=true; shift ;;
    -*) shift ;;
    *) break ;;
  esac
done
unit=${1:-}
unit=${unit%.service}
state=/run/standin-systemd
mkdir -p "$state"
pidf="$state/$unit.pid"

running() { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }
log() { echo "$(date +%s) $cmd $unit" >>/var/log/standin-systemctl.log; }
stop() {
  if running; then
    kill "$(cat "$pidf")" 2>/dev/null || true
    i=0
    while running && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  fi
  rm -f "$pidf"
}
start() {
  file="/etc/systemd/system/$unit.service"
  [ -f "$file" ] || { echo "Unit $unit.service not found." >&2; exit 5; }
  exec_start=$(sed -n 's/^ExecStart=//p' "$file" | tail -n 1)
  # shellcheck disable=SC2086
  setsid $exec_start </dev/null >>"/var/log/$unit.log" 2>&1 &
  echo $! >"$pidf"
}

case "$cmd" in
  daemon-reload | enable | disable) log ;;
  start) log; running || start ;;
  restart) log; stop; start ;;
  stop) log; stop ;;
  is-active)
    if running; then $quiet || echo active; else $quiet || echo inactive; exit 3; fi ;;
  *) echo "systemctl (test-rack stand-in): unsupported command: $cmd" >&2; exit 1 ;;
esac
