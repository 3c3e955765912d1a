#!/usr/bin/env bash
# Install and start the external services the integration tests use (Debian packages).
#
#   scripts/ci_services.sh                      install prometheus + postgresql + chromium if missing (CI does this)
#   scripts/ci_services.sh start-postgres       throwaway cluster in a new /tmp dir on a free loopback
#                                               port; prints "URL DIR" on stdout
#   scripts/ci_services.sh stop-postgres DIR    stop it and remove DIR
#   scripts/ci_services.sh start-prometheus DIR CONFIG PORT    prometheus on 127.0.0.1:PORT, data in DIR;
#                                               prints its PID
#
# Tests call the start/stop commands themselves (tests/service/_external.py) and skip with a clear
# message when a binary is missing and cannot be installed (no root, no apt).
set -euo pipefail

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return 0; }; done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install() {
  local need=()
  command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
  pg_bin >/dev/null 2>&1 || need+=(postgresql)
  command -v jq >/dev/null 2>&1 || need+=(jq)      # the docs/walkthrough.md commands (tests/conformance)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)            # headless browser of the dashboard tests
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver) # (tests/service/test_dashboard_browser.py)
  if [ ${#need[@]} -eq 0 ]; then echo "ci_services: prometheus, postgresql and chromium present" >&2; return 0; fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ci_services: cannot install ${need[*]} (needs root and apt-get); integration tests will skip" >&2
    return 0
  fi
  echo "ci_services: installing ${need[*]}" >&2
  apt-get update -qq >/dev/null || { echo "ci_services: apt-get update failed; integration tests will skip" >&2; return 0; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "ci_services: apt-get install ${need[*]} failed; integration tests will skip" >&2
  # the Debian packages start system services; the tests run their own throwaway instances
  if command -v service >/dev/null 2>&1; then
    service prometheus stop >/dev/null 2>&1 || true
    service postgresql stop >/dev/null 2>&1 || true
  fi
}

start_postgres() {
  local dir bin port
  bin="$(pg_bin)" || { echo "ci_services: postgresql not installed" >&2; exit 3; }
  dir="$(mktemp -d /tmp/deploysignal-pg.XXXXXX)"   # own dir: the postgres user must reach it
  chmod 0755 "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
  as_postgres "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1
  port="$(free_port)"
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null
  echo "postgresql://postgres@127.0.0.1:$port/postgres $dir"
}

stop_postgres() {
  local dir="$1" bin
  bin="$(pg_bin)" || exit 0
  as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  case "$dir" in /tmp/deploysignal-pg.*) rm -rf "$dir" ;; esac
}

start_prometheus() {
  local dir="$1" config="$2" port="$3"
  command -v prometheus >/dev/null 2>&1 || { echo "ci_services: prometheus not installed" >&2; exit 3; }
  mkdir -p "$dir"
  nohup prometheus --config.file="$config" --storage.tsdb.path="$dir/tsdb" \
    --web.listen-address="127.0.0.1:$port" >"$dir/prometheus.log" 2>&1 &
  echo $!
}

case "${1:-install}" in
  install) install ;;
  start-postgres) start_postgres ;;
  stop-postgres) stop_postgres "$2" ;;
  start-prometheus) start_prometheus "$2" "$3" "$4" ;;
  *) echo "usage: $0 [install|start-postgres|stop-postgres DIR|start-prometheus DIR CONFIG PORT]" >&2; exit 2 ;;
esac
