"""Trainer runs side by side: images/s per epoch of each run against the first (the baseline).

    python scripts/train_compare.py RUN_DIR [RUN_DIR ...] [--out compare.md]

Each RUN_DIR is a ``python -m resbench.train --out`` folder (train.csv, summary.json, env.json). The
timed region is the trainer's: training steps only, so compile warm-up and evaluation are excluded and
listed apart. Prints a markdown table; ``--out`` writes it too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def load_run(folder: Path) -> tuple[pd.DataFrame, dict, str]:
    """The per-epoch log, the summary and the command of one trainer run."""
    log = pd.read_csv(folder / "train.csv")
    summary = json.loads((folder / "summary.json").read_text())
    env = json.loads((folder / "env.json").read_text())
    return log, summary, env.get("command", str(folder))


def compare(folders: Sequence[Path]) -> str:
    """A markdown report: one column of images/s per run, per epoch, and each run's speed-up."""
    runs = [(f.name, *load_run(f)) for f in folders]
    base_name, base_log = runs[0][0], runs[0][1]
    table = base_log[["epoch"]].copy()
    for name, log, _, _ in runs:
        table[f"{name} img/s"] = (
            log.set_index("epoch")["images_per_s"].reindex(table["epoch"]).values
        )
    for name, _, _, _ in runs[1:]:
        table[f"{name} / {base_name}"] = table[f"{name} img/s"] / table[f"{base_name} img/s"]
    lines = [
        "# Trainer: images/s per epoch against the baseline",
        "",
        "Training steps only (compile warm-up and evaluation excluded). Runs:",
        "",
    ]
    for name, log, summary, command in runs:
        lines.append(
            f"- **{name}**: `{command}`; compile {summary.get('compile_s', 0.0):.1f} s, "
            f"final test accuracy {summary.get('final_test_acc', float('nan')):.4f}, "
            f"{log['images_per_s'].median():,.0f} img/s median over {len(log)} epoch(s)"
        )
    formats = ["d"] + [",.0f"] * len(runs) + [".2f"] * (len(runs) - 1)  # epoch, img/s, ratios
    table["epoch"] = table["epoch"].astype(str)  # an int column would be upcast with the floats
    lines += ["", table.to_markdown(index=False, floatfmt=formats), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "runs", nargs="+", type=Path, help="trainer run folders; the first is the baseline"
    )
    p.add_argument("--out", type=Path, help="also write the markdown here")
    args = p.parse_args(argv)
    missing = [str(f) for f in args.runs if not (f / "train.csv").is_file()]
    if missing:
        print(f"train_compare.py: no train.csv in {', '.join(missing)}", file=sys.stderr)
        return 2
    text = compare(args.runs)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
