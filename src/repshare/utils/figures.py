"""The one way every stage saves a figure: ``<stem>.png`` and ``<stem>.pdf`` side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


# No creation date or producer version inside the files: the same figure gives the same bytes (and DVC hash).
METADATA = {"pdf": {"CreationDate": None, "Producer": None, "Creator": None}, "png": {"Software": None}}


def save_figure(fig: plt.Figure, out_stem: str | Path, bbox_inches: str | None = "tight") -> list[Path]:
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = out_stem.with_name(out_stem.name + "." + ext)
        fig.savefig(p, dpi=150, bbox_inches=bbox_inches, metadata=METADATA[ext])
        paths.append(p)
    plt.close(fig)
    return paths
