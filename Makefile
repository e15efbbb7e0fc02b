# Two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo-out

.PHONY: install tracer demo test test-long lint bench conformance-table clean

install: $(STAMP)

# Every runtime that installs from wheels on a machine without CUDA, plus the
# pnnx converter without its (unneeded, multi-GB) torch dependency.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all,dev]"
	$(PY) -m pip install -q --no-deps pnnx
	# The OCR application of the drop-in tests and benchmark: its wheel asks for
	# opencv-python (GUI libraries); the dev extra gives it the headless build instead.
	$(PY) -m pip install -q --no-deps "rapidocr-onnxruntime==1.4.4"
	touch $(STAMP)

# strace, for tests/test_network.py: it sees connections from native code and from every
# child process. Installed when we are root (CI on a fresh clone); otherwise the test falls
# back to a Python audit hook, which sees Python's connections only.
tracer:
	@command -v strace >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq strace >/dev/null; \
	  else \
	    echo "strace is not installed and this is not root with apt-get: the no-network" \
	         "test traces with a Python audit hook only (install strace to trace native code)"; \
	  fi; }

test: $(STAMP) tracer
	$(PY) -m pytest -q tests

# ruff (lint and format) and mypy, with their settings in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The fuzzers at a long budget, and the other slow tests.
test-long: $(STAMP) tracer
	AUTOINFER_LONG=1 $(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/autoinfer --cache-dir $(DEMO)/cache doctor
	$(PY) tests/zoo.py mobilenetv2 $(DEMO)/mobilenetv2.onnx
	$(VENV)/bin/autoinfer --cache-dir $(DEMO)/cache run $(DEMO)/mobilenetv2.onnx
	@echo; echo 'A second start is a decision-cache hit:'
	$(VENV)/bin/autoinfer --cache-dir $(DEMO)/cache run $(DEMO)/mobilenetv2.onnx --repeat 0 | head -4

bench: $(STAMP)
	# as an installed package would be (pip compiles on install): starts read bytecode
	$(PY) -m compileall -q autoinfer probes
	$(PY) benchmarks/run.py
	$(PY) benchmarks/apps.py

conformance-table: $(STAMP)
	$(PY) scripts/conformance_table.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
