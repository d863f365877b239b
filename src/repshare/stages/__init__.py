"""One module per DVC stage, each with ``run(cfg)``: load inputs, call the science, write outputs
atomically, log. ``pipelines/<stage>.py`` calls ``run_stage(<module>.run)``; the sweep calls the
same ``run`` in process. Science lives in the topic packages and never reads the config.

``STAGES`` is the one ordered list of stages: ``dvc.yaml``'s stages, the sweep's order and the
structure tests all read it. Stage name = ``pipelines/<name>.py`` = ``repshare.stages.<name>`` =
its results folder = its metrics file.
"""

STAGES: tuple[str, ...] = (
    "validate",
    "prepare",
    "train_classifier",
    "train_detector",
    "train_classifier_color",
    "cka",
    "evaluate_merged",
    "analyze",
    "concurrency",
    "gemel",
    "branches",  # MEEdge part 1
    "self_merge",
    "kd_recover",
    "placement",  # MEEdge part 2 (reads part 1's profiles and feature cache)
    "compare",  # last two: read every method's results
    "report",
)


def stage_spec(name: str) -> str:
    """'repshare.stages.<name>:run', the form the sweep imports lazily."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
    return f"repshare.stages.{name}:run"
