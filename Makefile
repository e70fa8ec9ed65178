# The README's two commands: `make demo` and `make test`. Both set up .venv on first use:
# a pinned uv (bootstrapped with pip into .uv/) installs exactly what uv.lock holds.
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV := .uv/bin/uv
# uv must use this interpreter and never fetch one (the registries are all a machine may reach)
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test lint bench lock clean-venv

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet uv==$(UV_VERSION)

# --compile-bytecode: write the .pyc files at install, as pip does (uv does not by default).
# Where PYTHONDONTWRITEBYTECODE is set, nothing writes them later, and every process would
# compile torch, composer and streaming from source: 34 s instead of 14 s to import the
# trainer on a 2-core EPYC.
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --compile-bytecode --python $(PYTHON)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

# Two pytest workers (pytest-xdist), one torch thread in each process (the test processes
# and the commands they start): the suite is mostly single-threaded Python, so two workers
# use two cores without oversubscribing them. The tests that build streaming datasets run
# in one worker (`xdist_group("streaming")`: streaming registers them in shared memory).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) scripts/bench.py

# After a change to the dependencies in pyproject.toml: resolve again, and write the
# pinned list plain pip installs (README, "Installing with pip").
lock: | $(UV)
	$(UV) lock --python $(PYTHON)
	$(UV) export --frozen --all-extras --no-emit-project --no-hashes --quiet \
		--output-file requirements.lock.txt

clean-venv:
	rm -rf $(VENV) .uv
