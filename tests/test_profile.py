from __future__ import annotations

import re

import pytest

from resbench import profile
from resbench.measure import Config


def table_rows(markdown: str, first_header: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header}"))
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_profile_writes_trace_ops_and_stages(tmp_path, mode):
    out = tmp_path / mode
    rc = profile.main(
        ["--model", "small_resnet20", "--batch-size", "16", "--device", "cpu", "--mode", mode,
         "--steps", "2", "--wait", "0", "--warmup", "1", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    names = {e.get("name", "") for e in profile.trace_events(out / "trace.json.gz")}
    assert any("convolution" in n for n in names) and any("batch_norm" in n for n in names)

    ops = (out / "ops.md").read_text()
    rows = table_rows(ops, "operator")
    assert rows[0][0].startswith("aten::") and len(rows) >= 10
    shares = sum(float(r[4]) for r in rows)
    assert shares == pytest.approx(100, abs=1.0)
    assert any(r[5] for r in rows)  # FLOPs known for convolutions

    stages = (out / "stages.md").read_text()
    srows = table_rows(stages, "stage")
    names = ["stem", "layer1", "layer2", "layer3", "head"]
    assert {r[0] for r in srows} >= set(names)
    if mode == "train":  # every stage both ways, plus the loss and the optimizer step
        pairs = {(r[0], r[1]) for r in srows}
        assert pairs >= {(n, p) for n in [*names, "loss"] for p in ("forward", "backward")}
        assert ("optimizer", "update") in pairs
    covered = float(re.search(r"= ([\d.]+)% of the profiled step", stages).group(1))
    assert 90 <= covered <= 110
    assert (out / "stages.png").read_bytes().startswith(b"\x89PNG")


def test_stage_split_against_the_profiled_step():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = profile.run_profile(
            Config("small_resnet20", 8, device="cpu"), Path(d), steps=2, wait=0, warmup=1
        )
    total = p.stages["ms"].sum()
    assert total == pytest.approx(p.profiled_step_ms, rel=0.10)
    assert p.ops["share"].sum() == pytest.approx(1.0)
    assert p.step_ms > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet19"], "unknown model 'resnet19'"),
        (["--model", "resnet18", "--batch-size", "0"], "batch_size must be a positive integer"),
        (["--model", "resnet18", "--precision", "fp8"], "unknown precision 'fp8'"),
        (["--model", "resnet18", "--channels-last", "maybe"], "--channels-last"),
        (["--model", "resnet18", "--mode", "eval"], "unknown --mode value 'eval'"),
        (["--model", "resnet18", "--steps", "0"], "--steps must be at least 1"),
        (["--batch-size", "2"], "the following arguments are required: --model"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    assert profile.main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_categories():
    assert profile.category("aten::mkldnn_convolution") == "convolution"
    assert profile.category("aten::convolution_backward") == "convolution"
    assert profile.category("aten::native_batch_norm") == "batch norm"
    assert profile.category("aten::clamp_min") == "relu"
    assert profile.category("aten::add_") == "add (skip path)"
    assert profile.category("aten::addmm") == "linear"
