"""scripts/train_compare.py: trainer runs side by side, images/s per epoch against the baseline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import train_compare


def fake_run(folder: Path, images_per_s: list[float], compile_s: float, command: str) -> Path:
    folder.mkdir()
    epochs = range(1, len(images_per_s) + 1)
    pd.DataFrame({"epoch": epochs, "images_per_s": images_per_s}).to_csv(folder / "train.csv")
    (folder / "summary.json").write_text(
        json.dumps({"compile_s": compile_s, "final_test_acc": 0.9})
    )
    (folder / "env.json").write_text(json.dumps({"command": command}))
    return folder


def test_each_epoch_against_the_baseline(tmp_path, capsys):
    base = fake_run(tmp_path / "train", [11_000.0, 13_700.0], 0.0, "python -m resbench.train")
    best = fake_run(
        tmp_path / "train-best", [40_000.0, 54_800.0], 61.0, "... --compile reduce-overhead"
    )
    out = tmp_path / "compare.md"
    assert train_compare.main([str(base), str(best), "--out", str(out)]) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows]
    assert cells[0] == ["epoch", "train img/s", "train-best img/s", "train-best / train"]
    assert cells[2:] == [["1", "11,000", "40,000", "3.64"], ["2", "13,700", "54,800", "4.00"]]
    assert "compile 61.0 s" in text and "`... --compile reduce-overhead`" in text


def test_a_folder_without_a_log_is_a_usage_error(tmp_path, capsys):
    assert train_compare.main([str(tmp_path)]) == 2
    assert "no train.csv in" in capsys.readouterr().err
