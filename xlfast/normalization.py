"""Embedding normalisation, vecmap style (Artetxe et al. 2018, "A robust self-learning method...", §3.1):
steps applied in order, each 'unit' (rows to length 1) or 'center' (minus the mean word vector).
`xlfast map --normalize` takes the steps; pre-trained vectors get 'unit,center,unit' on load."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from xlfast.errors import UsageError, XlfastError

NORMALIZATION_STEPS = ("unit", "center", "none")


def parse_normalization(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """'unit,center,unit' -> ('unit', 'center', 'unit'); '' or 'none' -> ()."""
    if spec is None:
        return ()
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    steps = []
    for raw in parts:
        step = raw.strip().lower()
        if not step:
            continue
        if step not in NORMALIZATION_STEPS:
            raise UsageError(
                f"unknown normalisation step '{raw.strip()}' (choose from {', '.join(NORMALIZATION_STEPS)}, "
                "comma separated, e.g. unit,center,unit)"
            )
        if step != "none":
            steps.append(step)
    return tuple(steps)


def apply_normalization(vectors: np.ndarray, steps: Iterable[str]) -> np.ndarray:
    """Apply vecmap-style steps in order to a float32 copy: 'unit' scales rows to length 1 (zero rows
    stay zero), 'center' subtracts the mean word vector (dimension-wise)."""
    out = np.array(vectors, dtype=np.float32, copy=True)
    for step in steps:
        if step == "unit":
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        elif step == "center":
            out -= out.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        elif step != "none":
            raise XlfastError(f"unknown normalisation step '{step}'")
    return out
