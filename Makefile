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

.PHONY: install run study test bench report clean-results

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(STAMP)

# OVERRIDES="experiment=smoke" make run   -- any Hydra overrides
# The whole config is validated before DVC can delete anything: by compose.py before it writes
# params.yaml, by --validate on the file as the stages read it, and inside `dvc repro` by the first
# stage (`validate`, a dep of every stage; also the guard for a plain `dvc repro` or `dvc exp run -S`).
run: install
	$(BIN)/python pipelines/compose.py $(OVERRIDES)
	$(BIN)/python pipelines/compose.py --validate params.yaml
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# The seed study: the same config with more model seeds (two jobs at once, one thread each), its intervals
# over seeds written to results/study/estimates.json; compare then judges with them (docs/results.md).
# The main run (`make run`, seed 0) counts as one seed when its config matches, so the default adds 1 and 2.
STUDY_SEEDS ?= 1,2
study: install
	OMP_NUM_THREADS=1 $(BIN)/python -m repshare.sweep -m seed=$(STUDY_SEEDS) hydra/launcher=local \
		hydra.sweep.dir=multirun/study $(OVERRIDES)
	$(BIN)/python -m repshare.study multirun/study
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro -f -s compare
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro -s report

# As root on Debian/Ubuntu (CI) it first installs what the browser and SLURM tests need (Chromium;
# slurmctld, slurmd, munge); elsewhere those tests skip and say why.
test: install
	bash .ci/ensure-browser
	bash scripts/local-slurm install || echo "(the SLURM test will skip)"
	WANDB_MODE=disabled $(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/run_all.py
