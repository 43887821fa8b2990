# Two commands do all set-up on a fresh machine:
#   make demo   - creates .venv, installs workbench, runs the main job on a built-in model
#                 and writes report.html (graph, fusions, timing, memory, accuracy)
#   make test   - creates or reuses .venv, installs the test extras, runs the whole suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The tests that export real PyTorch models need torch (CPU build) and onnxscript. This
# machine kind carries a local torch 2.13.0 CPU wheel that pip finds; WITH_TORCH=0 skips
# the install and those tests then skip, saying why.
WITH_TORCH ?= 1

.PHONY: demo test lint format conformance check-zoo clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[mkl]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[test]"
ifeq ($(WITH_TORCH),1)
	$(PY) -m pip install -q "torch==2.13.0" onnxscript || echo "torch not installable here: the torch export tests will skip"
endif
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/workbench run
	$(VENV)/bin/workbench report -o report.html
	@echo "open report.html in a browser (self-contained, works offline)"

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check workbench tests benchmarks scripts
	$(VENV)/bin/ruff format --check workbench tests benchmarks scripts

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format workbench tests benchmarks scripts
	$(VENV)/bin/ruff check --fix workbench tests benchmarks scripts

test: $(VENV)/.installed-test lint
	# The emulated aarch64 worker of the arm backend (cached; needs qemu-user-static). If it
	# cannot be built here, the arm tests skip and say why.
	$(VENV)/bin/workbench arm setup || echo "workbench arm setup failed: the arm tests will skip"
	$(PY) -m pytest -m "not slow" --ignore=tests/cuda $(PYTEST_ARGS)
	# The teaching notebooks, executed; cells marked NBVAL_CHECK_OUTPUT must match.
	$(PY) -m pytest --nbval-lax notebooks --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider $(PYTEST_ARGS)
	# The CUDA kernels under numba's simulator: numba reads the switch at import, so the
	# group runs in a process of its own (on a machine with a GPU it runs for real).
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest tests/cuda -q $(PYTEST_ARGS)

conformance: $(VENV)/.installed-test
	$(VENV)/bin/workbench conformance --backend reference --json reports/conformance-reference.json
	$(VENV)/bin/workbench conformance --backend x86 --json reports/conformance-x86.json

check-zoo: $(VENV)/.installed-test
	$(PY) scripts/check_zoo.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
