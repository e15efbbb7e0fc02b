# Two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo-out

.PHONY: install demo test test-long bench conformance-table clean

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

test: $(STAMP)
	$(PY) -m pytest -q tests

# The fuzzers at a long budget, and the other slow tests.
test-long: $(STAMP)
	AUTOINFER_LONG=1 $(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/autoinfer --cache-dir $(DEMO)/cache doctor
	$(PY) -m autoinfer.zoo mobilenetv2 $(DEMO)/mobilenetv2.onnx
	$(VENV)/bin/autoinfer --cache-dir $(DEMO)/cache run $(DEMO)/mobilenetv2.onnx
	@echo; echo 'A second start is a decision-cache hit:'
	$(VENV)/bin/autoinfer --cache-dir $(DEMO)/cache run $(DEMO)/mobilenetv2.onnx --repeat 0 | head -4

bench: $(STAMP)
	$(PY) benchmarks/run.py
	$(PY) benchmarks/apps.py

conformance-table: $(STAMP)
	$(PY) scripts/conformance_table.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
