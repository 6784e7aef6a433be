#!/usr/bin/env bash
# Everything `make test` needs: Debian packages and the virtualenv, a private Redis and
# PostgreSQL, a Docker Engine, then lint and pytest. Stops only what it started.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE="$ROOT/var/test"
mkdir -p "$STATE"
PY="$ROOT/.venv/bin/python"

need=()
# nginx with its JavaScript module: the Docker socket proxy's policy (tests/deploy/test_socket_proxy.py);
# prometheus and promtool (tests/deploy/test_prometheus.py); a CJK font for the Chinese pages in chromium.
for pkg in redis-server postgresql docker.io docker-compose chromium debootstrap iproute2 nginx-light libnginx-mod-http-js prometheus fonts-noto-cjk; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# The virtualenv's Python first (the Makefile installs python3-venv where it is missing), then the
# packages install in the background beside the virtualenv's requirements (each minutes on a fresh
# machine, one bound by apt's downloads and dpkg, the other by pip's).
make --no-print-directory .venv/bin/python || exit 1
packages=""
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  (
    # No service starts on install (nginx would listen on every address): the tests start their own.
    no_start=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && no_start=1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    installed=$?
    [ -n "$no_start" ] && rm -f /usr/sbin/policy-rc.d
    exit $installed
  ) &
  packages=$!
fi
# The virtualenv with the console's, the model server's and the tests' requirements (Makefile).
make --no-print-directory .venv/.test-deps || { [ -n "$packages" ] && wait "$packages"; exit 1; }
if [ -n "$packages" ]; then
  wait "$packages" || { echo "apt-get could not install ${need[*]}"; exit 1; }
fi

started=()
cleanup() {
  for item in "${started[@]}"; do
    case "$item" in
      redis) kill "$(cat "$STATE/redis.pid")" 2>/dev/null ;;
      postgres) runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_CLUSTER" -m fast stop >/dev/null 2>&1 ;;
      dockerd) kill "$(cat "$STATE/dockerd.pid")" 2>/dev/null; sleep 1 ;;
    esac
  done
}
trap cleanup EXIT

# Redis on its own port, loopback only.
export TEST_REDIS_URL="redis://127.0.0.1:6391/0"
if ! redis-cli -p 6391 ping >/dev/null 2>&1; then
  redis-server --port 6391 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log" --dir "$STATE" && started+=(redis)
fi

# A private PostgreSQL cluster (initdb refuses root, so it runs as postgres).
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
export TEST_DATABASE_URL="postgres://console:console@127.0.0.1:5433/console"
chmod o+x "$ROOT" "$ROOT/var" "$STATE" 2>/dev/null
PG_CLUSTER="$STATE/pg"
if ! runuser -u postgres -- test -x "$STATE"; then
  # The checkout sits in a directory the postgres user cannot enter (`mktemp -d` makes them 0700):
  # the cluster lives outside it, one per checkout.
  PG_CLUSTER="/var/tmp/instance-console-pg-$(printf %s "$ROOT" | md5sum | cut -c1-12)"
fi
if ! runuser -u postgres -- "$PGBIN/pg_isready" -h 127.0.0.1 -p 5433 >/dev/null 2>&1; then
  if [ ! -f "$PG_CLUSTER/PG_VERSION" ]; then
    mkdir -p "$PG_CLUSTER" && chown postgres "$PG_CLUSTER" && chmod 700 "$PG_CLUSTER"
    runuser -u postgres -- "$PGBIN/initdb" -D "$PG_CLUSTER" -A trust -U postgres >/dev/null || exit 1
  fi
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PG_CLUSTER" -l "$PG_CLUSTER/server.log" -w \
    -o "-p 5433 -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null || exit 1
  started+=(postgres)
  psql -h 127.0.0.1 -p 5433 -U postgres -tc "SELECT 1 FROM pg_roles WHERE rolname='console'" | grep -q 1 ||
    psql -q -h 127.0.0.1 -p 5433 -U postgres -c "CREATE ROLE console LOGIN SUPERUSER PASSWORD 'console'"
  psql -h 127.0.0.1 -p 5433 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='console'" | grep -q 1 ||
    psql -q -h 127.0.0.1 -p 5433 -U postgres -c "CREATE DATABASE console OWNER console"
fi

# Docker Engine.
if ! docker info >/dev/null 2>&1; then
  dockerd >"$STATE/dockerd.log" 2>&1 &
  echo $! >"$STATE/dockerd.pid"
  started+=(dockerd)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see $STATE/dockerd.log"; exit 1; }
fi

"$ROOT/.venv/bin/ruff" format --check . && "$ROOT/.venv/bin/ruff" check . || { echo "ruff found problems (make format fixes most)"; exit 1; }

# vLLM's CPU build in its own virtualenv (tests/engines): minutes on a fresh machine (its downloads),
# nothing once installed. It installs beside the first tests; tests/engines waits for its status.
export VLLM_INSTALL_STATUS="$STATE/install-vllm.status" VLLM_INSTALL_LOG="$STATE/install-vllm.log"
rm -f "$VLLM_INSTALL_STATUS"
(bash scripts/install-vllm.sh "$ROOT/.venv-vllm" >"$VLLM_INSTALL_LOG" 2>&1; echo $? >"$VLLM_INSTALL_STATUS") &
vllm_install=$!

if [ $# -eq 0 ]; then
  # The whole suite in two lanes (tests/lanes.py says which tests run beside the rest, and why).
  "$PY" -m pytest -p tests.lanes -n 2
else
  "$PY" -m pytest "$@"
fi
rc=$?
wait "$vllm_install"  # never leave a half-installed virtualenv behind
exit $rc
