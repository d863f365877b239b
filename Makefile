# Two commands on a fresh machine:  `make run` (whole pipeline, embedded default) and `make test`.
# Both create .venv and install the pinned dependencies first (once; re-done when the pins change).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Offline by default: no W&B upload, no DVC telemetry or update checks.
export WANDB_MODE ?= offline
export DVC_NO_ANALYTICS := 1
export DVC_UPDATER_DISABLE := 1

.PHONY: install run test bench report clean-results

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(STAMP)

# OVERRIDES="experiment=smoke" make run   -- any Hydra overrides
# The whole composed config is validated before `dvc repro` starts: DVC deletes a stage's outputs
# before running it, so a bad value must fail here, while the previous results are still in place.
run: install
	$(BIN)/python pipelines/compose.py $(OVERRIDES)
	$(BIN)/python pipelines/compose.py --validate params.yaml
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

test: install
	WANDB_MODE=disabled $(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/run_all.py
