"""Every paper the pipeline reproduces, and the registry of their claims (one list, validated once).

Each topic's ``claims.py`` declares its claims and the quantities its study measures; this module
collects them, checks every entry (:func:`repshare.claims.validate_registry`) and says which
method sections test which paper. Stages call :func:`check_registry` at start-up, so a bad entry
stops with one line naming it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from repshare.claims import Claim, RegistryError, validate_registry


@dataclass(frozen=True)
class Paper:
    key: str
    title: str
    citation: str
    methods: tuple[str, ...]  # section keys (ReportSection.method) that measure this paper's quantities
    claim_modules: tuple[str, ...]  # modules (under repshare.) whose CLAIMS / QUANTITIES declare its claims


PAPERS: tuple[Paper, ...] = (
    Paper("cka", "Representation sharing guided by CKA", "Cao et al., MobiCom'24", ("cka_sharing",), ("sharing.claims",)),
    Paper("gemel", "Gemel: layer merging across the workload", "Padmanabhan et al., NSDI'23", ("gemel",), ("gemel.claims",)),
    Paper("meedge", "MEEdge: memory-elastic multi-exit networks", "MEEdge (no public code)",
          ("meedge", "meedge_placement"), ("multiexit.claims", "multiexit.placement_claims")),
    Paper("concurrency", "Concurrency score of network architectures", "Hadidi et al., IEEE EDGE'23",
          ("concurrency",), ("concurrency.claims",)),
)


def claim_modules(paper: Paper) -> list:
    return [importlib.import_module(f"repshare.{m}") for m in paper.claim_modules]


def quantities() -> dict[str, str]:
    """Every measurable quantity; keys are unique across topics."""
    out: dict[str, str] = {}
    for p in PAPERS:
        for mod in claim_modules(p):
            for key, text in mod.QUANTITIES.items():
                if key in out:
                    raise RegistryError(f"quantity {key!r} is declared twice ({mod.__name__})")
                out[key] = text
    return out


def registry() -> list[Claim]:
    """Every claim of every paper, validated (RegistryError names the first bad entry)."""
    claims: list[Claim] = []
    for p in PAPERS:
        for mod in claim_modules(p):
            claims += list(mod.CLAIMS)
    return validate_registry(claims, quantities(), [p.key for p in PAPERS])


def check_registry() -> None:
    """Start-up check: a bad entry raises a ConfigError-like one-liner (exit 2 at the stage boundary)."""
    from repshare.config import ConfigError

    try:
        registry()
    except RegistryError as err:
        raise ConfigError(f"claim registry: {err}") from None
