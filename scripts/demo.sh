#!/usr/bin/env bash
# The demo: a simulated fleet of 4 backends and the gateway on 127.0.0.1:8080. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
CONFIG=${GATEWAY_CONFIG:-config/gateway.yaml}

"$BIN/prefix-gateway" check-config "$CONFIG" >/dev/null
"$BIN/prefix-gateway" sim --backends 4 --base-port 8001 &
sim_pid=$!
gateway_pid=""
stop() {
  trap - EXIT INT TERM
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null || true
  kill "$sim_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

"$BIN/prefix-gateway" serve --config "$CONFIG" &
gateway_pid=$!

for _ in $(seq 1 200); do
  if "$BIN/python" - <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:8080/readyz", timeout=1).status == 200 else 1)
PY
  kill -0 "$gateway_pid" 2>/dev/null || { echo "the gateway exited; see the log above" >&2; exit 1; }
  sleep 0.1
done

cat <<'TXT'

prefix-gateway is up on http://127.0.0.1:8080 in front of 4 simulated backends (ports 8001-8004).
Try it:
  curl http://127.0.0.1:8080/v1/models
  curl http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model": "sim-llama-8b", "stream": true, "messages": [{"role": "user", "content": "Hello"}]}'
  .venv/bin/python -c 'from openai import OpenAI; c = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="none"); print(c.chat.completions.create(model="sim-llama-8b", messages=[{"role": "user", "content": "Hello"}]).choices[0].message.content)'
  curl http://127.0.0.1:8080/metrics
Ctrl-C stops the gateway and the fleet.
TXT
wait "$gateway_pid"
