from __future__ import annotations

import json
import math
import operator

import pytest
import torch
from torch import fx

from resbench import layerstats
from resbench.models import build_model


def count_additions(model: torch.nn.Module) -> int:
    graph = fx.symbolic_trace(model).graph
    return sum(
        1
        for n in graph.nodes
        if n.op == "call_function" and n.target in (operator.add, operator.iadd, torch.add)
    )


@pytest.mark.parametrize("name, blocks", [("small_resnet20", 9), ("resnet18", 8), ("resnet50", 16)])
def test_plain_twin_has_no_identity_additions(name, blocks):
    assert count_additions(build_model(name)) == blocks
    assert count_additions(build_model(name, residual=False)) == 0
    plain = build_model(name, residual=False)
    assert all(b.downsample is None for b in plain.blocks())
    n_plain = sum(p.numel() for p in plain.parameters())
    assert n_plain < sum(p.numel() for p in build_model(name).parameters())  # no projections


def test_stats_have_one_row_per_block_with_finite_numbers():
    x, y = layerstats.make_batch("small_resnet20", 16, 0, None, True)
    for variant in (True, False):
        model = build_model("small_resnet20", residual=variant)
        blocks, grads = layerstats.collect(model, "small_resnet20", "v", x, y)
        assert len(blocks) == 9 and [b.index for b in blocks] == list(range(9))
        assert len(grads) == 1 + 2 * 9  # stem + two convolutions per block
        for b in blocks:
            assert (
                math.isfinite(b.act_mean)
                and math.isfinite(b.act_std)
                and 0 <= b.act_zero_fraction <= 1
            )
        for g in grads:
            assert math.isfinite(g.grad_norm) and g.grad_norm > 0 and g.weight_norm > 0


def test_command_writes_tables_plots_and_the_depth_comparison(tmp_path, capsys):
    out = tmp_path / "ls"
    rc = layerstats.main(["--model", "small_resnet20", "--device", "cpu", "--batch-size", "8",
                          "--depths", "20,32", "--out", str(out)])  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in (out / "layerstats.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in rows}
    assert kinds == {"activation", "gradient", "depth"}
    assert {r["variant"] for r in rows if r["kind"] == "activation"} == {"residual", "plain"}
    assert len([r for r in rows if r["kind"] == "depth"]) == 4
    md = (out / "layerstats.md").read_text()
    assert "First-layer / last-layer gradient norm" in md and "## Across depths" in md
    for png in ("activations.png", "gradients.png", "feature_maps.png", "depth_gradients.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG"), png
    assert "ratio residual" in capsys.readouterr().out


def test_compare_original_and_preact_orders(tmp_path, capsys):
    out = tmp_path / "ls"
    rc = layerstats.main(["--model", "preact_resnet20", "--compare", "original,preact", "--device",
                          "cpu", "--batch-size", "4", "--depths", "20", "--out", str(out)])  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in (out / "layerstats.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in rows if r["kind"] == "activation"} == {"original", "preact"}
    depth = [r for r in rows if r["kind"] == "depth"]
    assert [(r["model"], r["variant"]) for r in depth] == [
        ("preact_resnet20", "original"),
        ("preact_resnet20", "preact"),
    ]
    assert all(r["last_block_act_std"] > 0 and r["first_block_act_std"] > 0 for r in depth)
    md = (out / "layerstats.md").read_text()
    assert "original vs preact" in md and "gradient norm: original" in md
    assert "ratio original" in capsys.readouterr().out


def test_the_entry_is_the_variant_a_checkpoint_loads_into():
    assert layerstats.is_entry("preact_resnet110", "preact")
    assert not layerstats.is_entry("preact_resnet110", "original")
    assert layerstats.is_entry("small_resnet110", "original")
    assert layerstats.is_entry("small_resnet110", "residual")
    assert not layerstats.is_entry("small_resnet110", "plain")
    # the two orders of one entry differ only in where BN and ReLU sit: additions stay, the
    # ReLU after each addition goes
    original = build_model("preact_resnet20", **layerstats.VARIANTS["original"])
    preact = build_model("preact_resnet20", **layerstats.VARIANTS["preact"])
    assert count_additions(original) == count_additions(preact) == 9
    assert not any(type(b).preact for b in original.blocks())
    assert all(type(b).preact for b in preact.blocks())


def test_checkpoint_from_the_trainer_loads(tmp_path):
    model = build_model("small_resnet20")
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint.pt")
    rc = layerstats.main(["--model", "small_resnet20", "--device", "cpu", "--batch-size", "4",
                          "--checkpoint", str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet19"], "unknown model 'resnet19'"),
        (["--batch-size", "1"], "--batch-size must be at least 2"),
        (["--depths", "20,x"], "--depths takes positive integers"),
        (
            ["--depths", "21"],
            "no model 'small_resnet21'; cifar depths of small_resnet are 18, 20, 32",
        ),
        (["--checkpoint", "/nonexistent.pt"], "is not a file"),
        (["--compare", "residual"], "--compare takes two variants; got residual"),
        (["--compare", "residual,sideways"], "unknown --compare value 'sideways'"),
        (
            ["--model", "preact_resnet20", "--depths", "18"],
            "preact_resnet are 20, 32, 44, 56, 110, 164, 1001",
        ),
        (["--device", "cuda:7"], "cuda"),
    ],
)
def test_bad_flags_exit_2(argv, message, tmp_path, capsys):
    assert layerstats.main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_checkpoint_needs_the_entry_among_the_compared(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": build_model("small_resnet20").state_dict()}, path)
    rc = layerstats.main(["--model", "small_resnet20", "--compare", "plain,preact", "--checkpoint",
                          str(path), "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 2
    assert (
        "--checkpoint loads into small_resnet20 itself, which --compare plain,preact leaves out"
        in (capsys.readouterr().err)
    )
