# Quick start: `make demo` and `make test` each work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck install browser dicom-tools clean shipped-model

# The shipped model is a package of its own (models/medmoe-universal: weights, card, licence notice).
SHIPPED := models/medmoe-universal
SHIPPED_VERSION := 1.0.0
SHIPPED_RUN ?= runs/medmoe-universal

$(STAMP): pyproject.toml requirements.lock $(SHIPPED)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip install --quiet --no-deps ./$(SHIPPED)
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

# Remake the shipped model from a data root with the five public datasets (about 35 min on 2 cores): one torch
# thread, so the weights are bit-identical on the same CPU instruction set (see its MODEL_CARD.md).
shipped-model: $(STAMP)
	@test -n "$(MEDMOE_DATA)" || { echo "set MEDMOE_DATA to the data root: make shipped-model MEDMOE_DATA=/path"; exit 2; }
	OMP_NUM_THREADS=1 $(BIN)/medmoe train --config cpu-feat --data $(MEDMOE_DATA) --seed 0 --out $(SHIPPED_RUN) --overwrite --no-progress
	OMP_NUM_THREADS=1 $(BIN)/medmoe evaluate $(SHIPPED_RUN) --out $(SHIPPED_RUN)/eval/metrics.json --no-progress
	$(BIN)/medmoe package $(SHIPPED_RUN) --metrics $(SHIPPED_RUN)/eval/metrics.json --name medmoe-universal \
		--version $(SHIPPED_VERSION) --out $(SHIPPED) --reproduce "make shipped-model MEDMOE_DATA=/path/to/datasets"
	$(BIN)/pip install --quiet --no-deps --force-reinstall ./$(SHIPPED)

clean:
	rm -rf $(VENV) demo_output .pytest_cache
