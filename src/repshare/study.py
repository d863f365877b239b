"""``make study``: the seed study's estimates from a finished seed sweep (and the main run).

    python -m repshare.study multirun/study [--results results] [--out results/study]

Reads every job of the sweep folder (its composed config in ``<job>/.hydra/config.yaml``, its method
sections under ``<job>/results/``) and, when ``--results`` holds a run of the same config with a seed
the sweep did not run (the main ``make run``), that run too; checks that all of them ran one config
up to the seed (:func:`repshare.comparison.study.config_fingerprint`); aggregates every measured
quantity over seeds (mean, Student-t interval) and writes ``results/study/estimates.json``, which the
compare stage then uses for its verdicts. A job that failed (no sections) is named and left out.
Exit status 2 with one line when fewer than two seeds are usable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from repshare.comparison.compare import load_sections, method_folders
from repshare.comparison.study import StudyError, build_study, config_fingerprint, write_study
from repshare.config import validate_config
from repshare.stats import Estimate
from repshare.utils.record import git_commit


def measurements(results_dir: Path, cfg: DictConfig) -> tuple[dict[str, Estimate], list[str]]:
    """Every section's measurements of one run (quantity -> Estimate) and the problems met."""
    _, folders = method_folders(OmegaConf.to_container(cfg.compare.methods),
                                OmegaConf.to_container(cfg.compare.sections_only))
    sections, problems = load_sections(results_dir, folders)
    out: dict[str, Estimate] = {}
    for sec in sections.values():
        out.update(sec.measurements)
    return out, [f"{p.file}: {p.message}" for p in problems]


def sweep_jobs(sweep_dir: Path) -> list[tuple[int, DictConfig, Path]]:
    """(seed, composed config, results folder) of every job folder of a Hydra sweep."""
    jobs = []
    for cfg_file in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        job = cfg_file.parent.parent
        # Validated as every stage validates its config (the schema fills optional keys), so the study's
        # fingerprint is the one the compare stage computes from its own config.
        cfg = validate_config(OmegaConf.load(cfg_file))
        jobs.append((int(cfg.seed), cfg, job / "results"))
    return jobs


def collect(sweep_dir: Path, results: Path | None, params: Path) -> tuple[list, list[str]]:
    """The (seed, config, measurements) of every usable run, and why the others were left out."""
    runs: list[tuple[int, DictConfig, Path]] = sweep_jobs(sweep_dir)
    notes: list[str] = []
    if not runs:
        raise StudyError(f"no job folders with .hydra/config.yaml in {sweep_dir}: run the seed sweep first")
    if results is not None and params.is_file() and results.is_dir():
        main_cfg = validate_config(OmegaConf.load(params))
        main_seed = int(main_cfg.seed)
        if main_seed in {s for s, _, _ in runs}:
            notes.append(f"{results}: seed {main_seed} also ran in the sweep; the sweep's job is used")
        elif config_fingerprint(main_cfg) != config_fingerprint(runs[0][1]):
            notes.append(f"{results}: another config than the sweep's (beyond seed and paths); not used")
        else:
            runs.append((main_seed, main_cfg, results))
    usable = []
    for seed, cfg, folder in sorted(runs, key=lambda r: r[0]):
        meas, problems = measurements(folder, cfg)
        if problems or not meas:
            notes.append(f"seed {seed} ({folder}) left out: {problems[0] if problems else 'no measurements'}")
            continue
        usable.append((seed, cfg, meas))
    return usable, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repshare.study", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--results", type=Path, default=Path("results"),
                    help="the main run's results (used as one more seed when its config matches)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="the main run's composed config")
    ap.add_argument("--out", type=Path, default=Path("results/study"))
    args = ap.parse_args(argv)
    try:
        jobs, notes = collect(args.sweep_dir, args.results, args.params)
        for n in notes:
            print(f"note [study]: {n}", file=sys.stderr)
        study = build_study(jobs, git_commit())
    except (StudyError, ValueError, OSError) as err:
        print(f"error [study]: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    path = write_study(args.out, study)
    print(f"wrote {path}: {len(study.estimates)} quantities over seeds {', '.join(map(str, study.seeds))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
