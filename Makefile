# prefix-gateway: `make run` (demo: simulated fleet + gateway), `make test`, `make check`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test check install bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@scripts/demo.sh

test: $(STAMP)
	@scripts/test.sh $(PYTEST_ARGS)

.PHONY: test-engines
test-engines:  # real vLLM (CPU build, tiny local model) behind the gateway; see scripts/test-engines.sh
	@scripts/test-engines.sh $(PYTEST_ARGS)

check: $(STAMP)
	$(VENV)/bin/ruff check gateway tests bench
	$(VENV)/bin/ruff format --check gateway tests bench
	$(VENV)/bin/mypy --strict gateway

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench/results
