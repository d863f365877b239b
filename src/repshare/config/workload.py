"""Config group ``workload`` (conf/workload/*.yaml): the models that run together on the edge box.

Every method reads this list. A model's name becomes its weights folder (results/models/<name>/), its
metrics file and its training stage (train_<name>), so it must be an identifier and name a builder
config under ``model.<name>``; its task fixes the metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from repshare.config.model import BUILD_DETECTOR
from repshare.config.rules import Check, Identifier, NonEmpty, OneOf, OrNull, Table, invalid, sibling
from repshare.data.shapes import COLOR_NAMES
from repshare.workload import TASKS

METRICS = {"classification": "top1", "detection": "mAP"}  # the accuracy each task reports
LABELS = ("labels", "color_labels")  # per-image labels a classifier can learn (color_labels: shapes data)


@dataclass
class WorkloadModelConfig:
    name: str
    task: str  # classification | detection
    metric: str  # top1 | mAP
    # Optional keys (an entry may leave them out; the schema holds their only value, see schema.py):
    label: str = "labels"  # classifiers: which per-image label (labels | color_labels)
    init_from: Optional[str] = None  # classifiers: warm-start from this workload model's trained weights


@dataclass
class WorkloadConfig:
    """The models that run together on the edge box; every method reads this list."""

    name: str
    models: list[WorkloadModelConfig]


def names(root) -> list[str]:
    return [str(m.name) for m in root.workload.models]


def _listed_once(name, root) -> str | None:
    return None if names(root).count(name) == 1 else "is listed twice in workload.models"


def _has_builder(name, root) -> str | None:
    known = list(root.model.keys())
    return None if name in known else f"is unknown: no model.{name} config (known: {', '.join(known)})"


def _builder_task(task, root, key) -> str | None:
    name = sibling(root, key, "name")
    if name not in root.model:
        return None
    is_detector = root.model[name]._target_ == BUILD_DETECTOR
    want = "detection" if is_detector else "classification"
    return None if task == want else f"model.{name} builds a {'detector' if is_detector else 'classifier'}: task {want}"


def _task_metric(metric, root, key) -> str | None:
    want = METRICS.get(sibling(root, key, "task"))
    return None if want is None or metric == want else f"a {sibling(root, key, 'task')} model reports {want}"


def _init_from(source, root, key) -> str | None:
    name = sibling(root, key, "name")
    if source == name:
        return "a model cannot warm-start from itself"
    tasks = {str(m.name): str(m.task) for m in root.workload.models}
    if source not in tasks:
        return f"must name another workload model ({', '.join(tasks)})"
    return None if tasks[source] == "classification" else "must name a classification model"


def _num_classes_fit_labels(models, root) -> str | None:
    """A classifier's head covers every label of the data (a smaller one fails deep inside the loss).
    Raised under the model's own key, which is what the user must change."""
    d = root.data
    for m in models:
        if m["task"] != "classification" or m["name"] not in root.model:
            continue
        need = len(COLOR_NAMES) if m.get("label") == "color_labels" else d.num_classes
        if m.get("label") == "color_labels" and d.name != "shapes":
            continue
        have = root.model[m["name"]].num_classes
        if have < need:
            what = "colours" if m.get("label") == "color_labels" else f"data.num_classes={d.num_classes} labels"
            raise invalid(f"model.{m['name']}.num_classes", have, f"must be >= {need} (the data's {what})")
    return None


def _detector_fits_boxes(det_classes, root) -> str | None:
    d = root.data
    if d.name != "shapes" or det_classes >= d.num_classes:
        return None
    return f"must be >= data.num_classes={d.num_classes} (the data's box classes)"


RULES: Table = [
    ("workload.name", Identifier()),
    ("workload.models", NonEmpty()),
    ("workload.models[*].name", Identifier(), Check(_listed_once), Check(_has_builder)),
    ("workload.models[*].task", OneOf(*TASKS), Check(_builder_task)),
    ("workload.models[*].metric", OneOf(*METRICS.values()), Check(_task_metric)),
    ("workload.models[*].label", OneOf(*LABELS)),
    ("workload.models[*].init_from", OrNull(Check(_init_from))),
    ("workload.models", Check(_num_classes_fit_labels)),
    ("model.classifier.num_classes", Check(lambda n, root: None if n >= root.data.num_classes else
                                           f"must be >= data.num_classes={root.data.num_classes} (the data's labels)")),
    ("model.detector.num_classes", Check(_detector_fits_boxes)),
]
