"""Accuracy in words: the answers that respect ``--max-accuracy-drop``, and the accuracy table.

Rows scored on labelled images (``--eval-data``) carry top-1, its drop against fp32 eager in points
with a paired 95% interval, the images that flipped and McNemar's p. Which rows answer comes from
``analysis.accuracy_picks`` (the one home of the rule); this module only writes them down. A row
whose accuracy was not measured says so, and is never named as within the bound.
"""

from __future__ import annotations

import re

import pandas as pd

from resbench.report.analysis import (
    BASELINE_SETTING,
    ROW_KEY,
    accuracy_picks,
    answers,
    by_input,
)
from resbench.report.load import load_note
from resbench.report.text import ci_text, flags, fmt, mfu_text, p_text, points, times

NOT_MEASURED = "accuracy not measured"


def has_accuracy(frame: pd.DataFrame) -> bool:
    """Whether any ok row of ``frame`` was scored on labelled images."""
    return not accuracy_picks(frame).empty


def top1(r) -> str:
    return f"{r['top1_accuracy']:.2%}" if pd.notna(r.get("top1_accuracy")) else "not measured"


def drop_text(r, max_drop: float, p: bool = False) -> str:
    """ "0.31 points (95% CI 0.12 to 0.50)", with McNemar's p when ``p``, and a warning when the
    row is within ``max_drop`` by its drop but its interval reaches past it."""
    if pd.isna(r.get("accuracy_drop")):
        return "" if pd.notna(r.get("top1_accuracy")) else NOT_MEASURED
    ci = ci_text(r.get("accuracy_drop_ci"))
    p_value = p_text(r.get("accuracy_drop_p")) if p else ""
    said = [f"95% CI {ci}"] * bool(ci) + [f"McNemar p {p_value}"] * bool(p_value)
    text = f"{r['accuracy_drop']:.2f} points" + (f" ({'; '.join(said)})" if said else "")
    if bool(r.get("uncertain", False)):
        text += f": the interval reaches past {points(max_drop)}"
    return text


def overall_text(r, max_drop: float) -> str:
    """The fastest row when it is not the answer within the bound: its speed and its price."""
    text = f"{r['setting']}{flags(r)}: {fmt(r['throughput_ips'])} img/s"
    if pd.notna(r.get("speedup")):
        text += f", {times(r['speedup'])}"
    if pd.isna(r.get("top1_accuracy")):
        return text + f", {NOT_MEASURED}"
    if pd.isna(r.get("accuracy_drop")):
        return text + f", top-1 {top1(r)}, its drop not known (no fp32 eager row)"
    return text + f", at a drop of {drop_text(r, max_drop, p=True)}"


def answer_rows(part: pd.DataFrame, max_drop: float) -> pd.DataFrame:
    """Per model and batch: the fastest setting within ``max_drop`` points of fp32 eager's top-1,
    its numbers, and the fastest overall with its drop when that is another setting."""
    picks = accuracy_picks(by_input(part), max_drop)
    scored = dict(list(picks.groupby(ROW_KEY, sort=False, dropna=False)))
    within_name = f"fastest within {points(max_drop)}"
    rows = []
    for _, best in answers(by_input(part)).iterrows():
        mine = scored.get(tuple(best[k] for k in ROW_KEY), picks.iloc[0:0])
        answer = mine[mine["fastest_within"]]
        row = {"model": best["model"], "batch": best["batch_size"]}
        if mine.empty:  # nothing of this model and batch was scored: the fastest, said so
            chosen, name = best, f"{best['setting']}{flags(best)} ({NOT_MEASURED})"
        elif answer.empty:
            chosen, name = None, f"none measured within {points(max_drop)}"
        else:
            chosen = answer.iloc[0]
            name = chosen["setting"] + flags(chosen)
        loaded = load_note(part, chosen) if chosen is not None else ""
        if loaded:  # a speed-up between loaded rows measures the load, not the setting
            chosen, name = None, loaded
        row[within_name] = name
        row |= {
            "img/s": fmt(chosen["throughput_ips"]) if chosen is not None else "",
            f"vs {BASELINE_SETTING}": times(chosen["speedup"]) if chosen is not None else "",
            "top-1": top1(chosen) if chosen is not None else "",
            "drop": drop_text(chosen, max_drop) if chosen is not None and not mine.empty else "",
        }
        fastest = mine[mine["fastest_overall"]]
        if mine.empty or (chosen is not None and bool(chosen["fastest_overall"])):
            row["fastest overall"] = "the same"
        else:
            row["fastest overall"] = overall_text(fastest.iloc[0], max_drop)
        row["MFU"] = mfu_text(chosen) if chosen is not None else ""
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_rows(part: pd.DataFrame, max_drop: float) -> pd.DataFrame:
    """Every scored model and batch of ``part``, a row per setting, fastest first: images/s, top-1,
    top-5, the drop with its interval, the flips, McNemar's p, the KL divergence and calibration."""
    picks = accuracy_picks(by_input(part), max_drop)
    if picks.empty:
        return pd.DataFrame()
    order = {m: i for i, m in enumerate(dict.fromkeys(by_input(part)["model"]))}
    picks = picks.assign(_o=picks["model"].map(order), _s=-picks["throughput_ips"])
    picks = picks.sort_values(["_o", "batch_size", "_s"], kind="stable")
    top5 = picks["top5_accuracy"].notna().any()
    calibrated = picks["calibration"].notna().any()
    rows = []
    for _, r in picks.iterrows():
        scored = bool(r["measured"])
        row = {
            "model": r["model"],
            "batch": r["batch_size"],
            "setting": r["setting"] + flags(r),
            "img/s": fmt(r["throughput_ips"]),
            f"vs {BASELINE_SETTING}": times(r["speedup"]),
            "top-1": top1(r),
        }
        if top5:
            row["top-5"] = f"{r['top5_accuracy']:.2%}" if pd.notna(r["top5_accuracy"]) else ""
        drop = r["accuracy_drop"]
        ci = ci_text(r["accuracy_drop_ci"])
        row["drop, points (95% CI)"] = (
            (f"{drop:.2f}" + (f" ({ci})" if ci else "")) if pd.notna(drop) else ""
        )
        row[f"within {points(max_drop)}"] = (
            ("yes, but its interval reaches past it" if r["uncertain"] else "yes")
            if r["within"]
            else ("no" if scored and pd.notna(drop) else ("" if scored else NOT_MEASURED))
        )
        lost, gained = r["flips_lost"], r["flips_gained"]
        row["lost / gained"] = (
            f"{lost:.0f} / {gained:.0f}" if pd.notna(lost) and pd.notna(gained) else ""
        )
        row["McNemar p"] = p_text(r["accuracy_drop_p"])
        row["KL, nats"] = f"{r['kl_divergence']:.2g}" if pd.notna(r["kl_divergence"]) else ""
        if calibrated:
            row["calibration"] = calibration_text(r)
        row["front"] = "yes" if r["pareto"] else ""
        rows.append(row)
    return pd.DataFrame(rows)


def calibration_text(r) -> str:
    """What int8 calibrated on, with the method, in a table cell's few words: "320 fashion-mnist
    train images (seed 1), 10 batches of 32, minmax"; "" for others. The folder is left out (the
    table's heading names the images), so the cell keeps to one line."""
    if not isinstance(r.get("calibration"), str):
        return ""
    text = re.sub(r" of /\S+", "", r["calibration"]).replace("batch(es)", "batches")
    text = text.replace(", in ", ", ")
    method = r.get("calibration_method")
    return text + (f", {method}" if isinstance(method, str) else "")


def scored_on(part: pd.DataFrame) -> str:
    """What the rows were scored on, as the accuracy heading says it: "10,000 images of PATH"."""
    scored = part[part["top1_accuracy"].notna()]
    pairs = dict.fromkeys(zip(scored["eval_images"], scored["eval_data"], strict=True))
    said = [
        (f"{fmt(n, 0)} images" if pd.notna(n) else "labelled images")
        + (f" of {path}" if isinstance(path, str) else "")
        for n, path in pairs
    ]
    return "; ".join(said)


LEGEND = (
    "top-1 (top-5) is the fraction of the labelled images whose class is the row's first (one of "
    "its first five); drop is fp32 eager's top-1 minus the row's, in points, on the same images and "
    "weights, with its paired 95% interval; lost / gained count the images right in fp32 eager and "
    "wrong in the row, and the reverse; McNemar p is the exact test of those flips (small: the drop "
    "is not chance); KL is the mean KL divergence of the row's softmax from fp32 eager's, in nats "
    "per image; front marks the rows that no other row beats in both images/s and drop. The answers "
    "name the fastest row within {bound} of fp32 eager (--max-accuracy-drop), and the fastest of "
    "all with its drop when that is another row."
)
