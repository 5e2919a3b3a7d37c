"""A Config scored on labelled images in both runs: did it become less accurate?

Beside the speed verdict of ``compare``: the top-1 change in points, and "less accurate" when it
fell by more than the allowed drop, or when its drop against its own run's fp32 eager became
significant (McNemar) where it was not.
"""

from __future__ import annotations

import math

import pandas as pd

from resbench.engine.measure import Result
from resbench.report.analysis import DROP_TOLERANCE, finite
from resbench.report.text import p_text, points


def significant_drop(r: Result, alpha: float) -> bool:
    """Whether a row lost top-1 against fp32 eager of its own run by more than chance (McNemar)."""
    p, drop = finite(getattr(r, "accuracy_drop_p", None)), finite(getattr(r, "accuracy_drop", None))
    return p is not None and drop is not None and p < alpha and drop > 0


def accuracy_verdict(
    new: Result, old: Result, max_drop: float, alpha: float
) -> tuple[float, str, str]:
    """(change in points, "less accurate" or "", why) for one Config scored in both runs.

    Less accurate: its top-1 fell by more than ``max_drop`` points, or it fell and its drop against
    its own run's fp32 eager is now significant (McNemar p < ``alpha``) where it was not. NaN and
    no verdict where either side was not scored.
    """
    a, b = finite(getattr(new, "top1_accuracy", None)), finite(getattr(old, "top1_accuracy", None))
    if a is None or b is None:
        return math.nan, "", ""
    change = (a - b) * 100
    notes = []
    seen = {side: (getattr(x, "eval_images", None), getattr(x, "eval_data", None))
            for side, x in (("new", new), ("old", old))}  # fmt: skip
    if seen["new"] != seen["old"]:
        said = "; ".join(f"{side}: {n} images of {d}" for side, (n, d) in seen.items())
        notes.append(f"scored on other images than the old run's ({said}): not like for like")
    if change < -(max_drop + DROP_TOLERANCE):
        notes.insert(
            0, f"top-1 fell {-change:.2f} points, more than the allowed {points(max_drop)}"
        )
        return change, "less accurate", "; ".join(notes)
    if change < 0 and significant_drop(new, alpha) and not significant_drop(old, alpha):
        notes.insert(
            0,
            f"top-1 fell {-change:.2f} points and its drop against fp32 eager is now significant "
            f"(McNemar p {p_text(new.accuracy_drop_p)}; the old run's "
            f"{p_text(getattr(old, 'accuracy_drop_p', None)) or 'not recorded'})",
        )
        return change, "less accurate", "; ".join(notes)
    return change, "", "; ".join(notes)


def accuracy_line(table: pd.DataFrame, max_drop: float) -> str:
    """The verdict's sentence on accuracy: how many scored Configs became less accurate, named."""
    if "accuracy" not in table:
        return ""
    scored = table[table["accuracy change"].notna()]
    worse = scored[scored["accuracy"] == "less accurate"]
    text = (
        f" Accuracy compared on {len(scored)} Configs scored in both runs: {len(worse)} less "
        f"accurate (top-1 fell by more than {points(max_drop)}, or its drop against fp32 eager "
        "became significant)"
    )
    if len(worse):
        names = [
            f"{r['model']} b{r['batch']} {r['mode']} {r['setting']} ({r['accuracy change']:+.2f})"
            for _, r in worse.iterrows()
        ]
        text += ": " + ", ".join(names)
    return text + "."
