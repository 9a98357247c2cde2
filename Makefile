# Two commands set up a fresh machine: `make bench` (default benchmark, offline) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $(STAMP)

.PHONY: install bench test test-all
install: $(STAMP)

bench: $(STAMP)
	$(PY) -m bench

test: $(STAMP)
	WANDB_MODE=disabled WANDB_SILENT=true $(PY) -m pytest -q

test-all: $(STAMP)
	WANDB_MODE=disabled WANDB_SILENT=true $(PY) -m pytest -q -m ''
