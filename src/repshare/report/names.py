"""Readable names for the keys the pipeline uses internally (methods, stages, metrics), and fixed dashboard text."""

from __future__ import annotations

METHOD_NAMES: dict[str, str] = {
    "cka_sharing": "Representation sharing (CKA)",
    "gemel": "Gemel layer merging",
    "meedge": "MEEdge branches",
    "meedge_placement": "MEEdge placement",
    "concurrency": "Concurrency score",
}

STAGE_NAMES: dict[str, str] = {
    "prepare": "Prepare data",
    "train_classifier": "Train classifier",
    "train_detector": "Train detector",
    "cka": "CKA similarity",
    "evaluate_merged": "Evaluate merged pairs",
    "evaluate_models": "Evaluate source models",
    "analyze": "Correlation analysis",
    "compare": "Comparison",
    "report": "Dashboard",
}

METRIC_NAMES: dict[str, str] = {
    "top1": "top-1 accuracy",
    "top5": "top-5 accuracy",
    "mAP": "COCO mAP@[.5:.95]",
    "mAP50": "COCO mAP@.5",
    "mAE": "mean accuracy expectation",
}


COMBINATION_NOTE = (
    "The methods are not stacked here. Gemel shares identical layers between models; representation "
    "sharing removes the classifier's layers up to the cut and feeds it the detector's stage output; "
    "MEEdge adds and merges exit branches on the classifier. On this workload Gemel's and the cut's "
    "savings overlap in the same early backbone layers, so their sum would overstate a combination; "
    "measuring one needs retraining the merged backbone with the cut in place, which no stage does yet. "
    "MEEdge's branches are complementary (they live after the backbone stages) but are judged by mAE, "
    "not by the classifier's top-1, so its points compare on memory, not one-for-one on accuracy.")


def readable(key: str, table: dict[str, str] | None = None) -> str:
    """The table's name for ``key``, else the key with underscores as spaces, first letter capital."""
    if table and key in table:
        return table[key]
    text = str(key).replace("_", " ").strip()
    return text[:1].upper() + text[1:]
