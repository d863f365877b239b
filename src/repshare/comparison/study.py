"""The seed study: the same config run with several model seeds, its estimates over seeds, and when
the comparison may use them.

``make study`` runs the pipeline for several values of ``seed`` (the Hydra sweep) and writes
``results/study/estimates.json``::

    {"format": 1, "config_fingerprint": "<sha256>", "seeds": [0, 1, 2], "commit": "<git sha or null>",
     "estimates": {quantity: Estimate dict over "seeds"}}

- :func:`config_fingerprint` identifies a config up to what a seed study varies: every parameter
  except ``seed`` (what the study varies), ``paths`` and ``logger`` (where things are written and
  logged; the sweep points them into each job's folder), ``compare`` and ``report`` (they only read
  the measurements). Two runs with the same fingerprint measure the same quantities on the same data
  recipe; a study is used only for a run with the study's fingerprint.
- :func:`aggregate_seeds` turns per-seed measurements (plain values: seed -> quantity -> Estimate) into
  one Estimate per quantity: the mean over seeds with a Student-t interval over seeds
  (:func:`repshare.stats.t_interval`). It is not interpretable when any seed's estimate was not.
- :func:`read_study` reads the file back, every field checked (one line naming the field).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repshare.stats import LEVEL, Estimate, t_interval

FORMAT = 1
# Root keys left out of the fingerprint (module docstring says why).
NOT_FINGERPRINTED = ("seed", "paths", "logger", "compare", "report", "hydra")


class StudyError(ValueError):
    """The study file is malformed, or the seeds' configs differ."""


def seed_derived_keys() -> tuple[str, ...]:
    """Dotted keys whose value in conf/ is ``${seed}`` (e.g. data.seed): they follow the seed, so a study
    varies them too. Read from the composed, unresolved conf/ tree, so a new one is found by itself."""
    from omegaconf import OmegaConf

    from repshare.config import compose_raw

    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif node == "${seed}":
            found.append(prefix[:-1])

    walk(OmegaConf.to_container(compose_raw([]), resolve=False), "")
    return tuple(found)


def canonical_config(cfg: Any, derived: Sequence[str] | None = None) -> dict[str, Any]:
    """The config as a plain dict without the keys a seed study may vary: NOT_FINGERPRINTED, and the keys
    that follow the seed in conf/ (:func:`seed_derived_keys`, e.g. data.seed), whatever their value."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"config must be a mapping, got {type(cfg).__name__}")
    out = json.loads(json.dumps({k: v for k, v in dict(cfg).items() if k not in NOT_FINGERPRINTED}, default=str))
    for key in seed_derived_keys() if derived is None else derived:
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def config_fingerprint(cfg: Any) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of :func:`canonical_config`."""
    text = json.dumps(canonical_config(cfg), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def aggregate_seeds(per_seed: Mapping[int, Mapping[str, Estimate]], level: float = LEVEL) -> dict[str, Estimate]:
    """quantity -> mean over the seeds that measured it, with a t-interval over those seeds.

    A seed whose estimate of a quantity is missing or NaN does not count (the note says how many seeds
    did); any seed whose estimate was not interpretable makes the study estimate not interpretable,
    with that seed's note.
    """
    seeds = sorted(per_seed)
    quantities = sorted({q for s in seeds for q in per_seed[s]})
    out: dict[str, Estimate] = {}
    for q in quantities:
        got = {s: per_seed[s][q] for s in seeds if q in per_seed[s]}
        finite = {s: e for s, e in got.items() if math.isfinite(e.value)}
        note = f"mean over {len(finite)} of {len(seeds)} seeds ({', '.join(str(s) for s in finite)})"
        est = t_interval([e.value for e in finite.values()], level=level, over="seeds", note=note)
        blocked = [(s, e) for s, e in got.items() if not e.interpretable]
        if blocked:
            s, e = blocked[0]
            est = est.with_note(f"{note}; not interpretable: seed {s}: {e.note or 'its data cannot carry a verdict'}",
                                interpretable=False)
        out[q] = est
    return out


@dataclass
class Study:
    fingerprint: str
    seeds: list[int]
    commit: str | None
    estimates: dict[str, Estimate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "config_fingerprint": self.fingerprint, "seeds": list(self.seeds),
                "commit": self.commit, "estimates": {k: e.to_dict() for k, e in sorted(self.estimates.items())}}


def build_study(jobs: Sequence[tuple[int, Any, Mapping[str, Estimate]]], commit: str | None = None) -> Study:
    """From (seed, config, measurements) per sweep job: check every job has one fingerprint, aggregate."""
    if len(jobs) < 2:
        raise StudyError(f"a seed study needs at least 2 seeds, got {len(jobs)}")
    prints = {seed: config_fingerprint(cfg) for seed, cfg, _ in jobs}
    seeds = [seed for seed, _, _ in jobs]
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"seed study: a seed appears twice in {seeds}")
    if len(set(prints.values())) != 1:
        first = seeds[0]
        other = next(s for s in seeds if prints[s] != prints[first])
        raise StudyError(f"seed study: seeds {first} and {other} ran different configs (beyond seed and paths)")
    per_seed = {seed: dict(meas) for seed, _, meas in jobs}
    return Study(prints[seeds[0]], sorted(seeds), commit, aggregate_seeds(per_seed))


def parse_study(doc: Any, where: str) -> Study:
    """A Study from its parsed JSON; StudyError names the file and the field."""
    def bad(name: str, want: str, got: Any) -> StudyError:
        return StudyError(f"{where}: field {name!r} must be {want}, got {got!r}"[:300])

    if not isinstance(doc, dict):
        raise bad("(document)", "an object", type(doc).__name__)
    unknown = sorted(set(doc) - {"format", "config_fingerprint", "seeds", "commit", "estimates"})
    if unknown:
        raise StudyError(f"{where}: unknown field {unknown[0]!r}")
    if doc.get("format") != FORMAT:
        raise bad("format", str(FORMAT), doc.get("format"))
    fp = doc.get("config_fingerprint")
    if not isinstance(fp, str) or len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise bad("config_fingerprint", "a sha256 hex digest", fp)
    seeds = doc.get("seeds")
    if not isinstance(seeds, list) or len(seeds) < 2 or not all(isinstance(s, int) and not isinstance(s, bool)
                                                                  for s in seeds):
        raise bad("seeds", "a list of at least 2 integer seeds", seeds)
    commit = doc.get("commit")
    if commit is not None and not isinstance(commit, str):
        raise bad("commit", "text or null", commit)
    ests = doc.get("estimates")
    if not isinstance(ests, dict):
        raise bad("estimates", "an object (quantity -> estimate)", ests)
    out = {}
    for q, e in ests.items():
        try:
            est = Estimate.from_dict(e) if isinstance(e, dict) else None
        except (ValueError, TypeError) as err:
            raise StudyError(f"{where}: field 'estimates.{q}': {err}") from None
        if est is None or est.over != "seeds":
            raise bad(f"estimates.{q}", "an estimate over seeds", e)
        if est.n > len(seeds):
            raise bad(f"estimates.{q}.n", f"at most the {len(seeds)} seeds", est.n)
        out[q] = est
    return Study(fp, list(seeds), commit, out)


def read_study(path: str | Path, verify: bool = True) -> Study | None:
    """The study at ``path``, or None when there is none; StudyError/ArtifactError name what is wrong."""
    path = Path(path)
    if not path.exists():
        return None
    if verify:
        from repshare.utils.artifacts import verify_file

        verify_file(path, "study (make study)")
    from repshare.comparison.jsonfile import read_strict_json

    return parse_study(read_strict_json(path, StudyError), str(path))


def write_study(folder: str | Path, study: Study) -> Path:
    """Write ``folder/estimates.json`` atomically, with the checksums the compare stage verifies."""
    from repshare.utils.io import atomic_dir, write_json

    folder = Path(folder)
    with atomic_dir(folder, stage="study") as tmp:
        write_json(tmp / "estimates.json", study.to_dict())
    return folder / "estimates.json"


def study_use(study: Study | None, fingerprint: str) -> tuple[Study | None, str]:
    """(the study when it may be used, one sentence saying which intervals the verdicts use and why)."""
    if study is None:
        return None, "no seed study (results/study/estimates.json absent): verdicts use this run's intervals"
    if study.fingerprint != fingerprint:
        return None, (f"a seed study is present but for another config (fingerprint {study.fingerprint[:12]} vs this "
                      f"run's {fingerprint[:12]}): not used; verdicts use this run's intervals")
    return study, (f"seed study over seeds {', '.join(map(str, study.seeds))}"
                   + (f" (commit {study.commit[:12]})" if study.commit else "")
                   + ": verdicts use its intervals over seeds for the quantities it has")
