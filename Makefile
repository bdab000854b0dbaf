# Quick start: `make demo` and `make test` each work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck install browser dicom-tools clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medmoe demo --out demo_output

# The end-to-end web test drives headless Chromium; .ci/setup-browser installs it if missing.
browser:
	.ci/setup-browser

# The PACS round trip and the DICOM validation need Orthanc and dciodvfy; .ci/setup-dicom-tools installs them.
dicom-tools:
	.ci/setup-dicom-tools

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	.ci/mypy-gate

test: $(STAMP) browser dicom-tools lint typecheck
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_output .pytest_cache
