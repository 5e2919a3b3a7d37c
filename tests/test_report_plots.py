"""The other tools' figures and tables read at a glance: trainer, layerstats."""

from __future__ import annotations

import pandas as pd
import torch

from resbench import layerstats
from resbench.layerstats import plots as layerstats_plots
from resbench.models import build_model
from resbench.report import pyplot
from resbench.train import recipe as trainrun


def _capture_figures(monkeypatch):
    """Keep every figure a function saves, so its axes can be inspected."""
    plt = pyplot()
    saved = []
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        saved.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    monkeypatch.setattr(plt, "close", lambda *a: None)
    return saved


def test_trainer_plot_labels_targets_and_starts_at_zero(tmp_path, monkeypatch):
    saved = _capture_figures(monkeypatch)
    run = tmp_path / "seed0"
    run.mkdir()
    pd.DataFrame({"cum_train_s": [12.0, 20.0, 30.0], "test_acc": [0.5, 0.85, 0.92]}).to_csv(
        run / "train.csv", index=False
    )
    cfg = trainrun.TrainConfig(model="small_resnet20")
    trainrun.accuracy_plot([(run, {"seed": 0})], cfg, tmp_path / "acc.png")
    ax = saved[0].axes[0]
    assert ax.get_xlim()[0] == 0
    labels = {t.get_text() for t in ax.texts}
    assert {f"target {t:.0%}" for t in cfg.targets} <= labels


def test_layerstats_tables_have_flat_names_and_plots_name_layers(tmp_path, monkeypatch):
    frame = pd.DataFrame(
        [
            {"model": "m", "variant": v, "index": i, "block": f"layer1.{i}", "act_std": 1.0 + i,
             "act_zero_fraction": 0.5}
            for v in ("residual", "plain") for i in range(3)
        ]
    )  # fmt: skip
    table = layerstats.wide_table(frame, "block", ["act_std"], ".3f")
    header = table.splitlines()[0]
    assert "act_std (residual)" in header and "act_std (plain)" in header and "('" not in header
    assert "layer1.2" in table

    saved = _capture_figures(monkeypatch)
    layerstats_plots.plot_pair(frame, "act_std", "std", tmp_path / "a.png", False, "t")
    ticks = [t.get_text() for t in saved[0].axes[0].get_xticklabels()]
    assert ticks == ["layer1.0", "layer1.1", "layer1.2"]

    layerstats_plots.feature_maps(
        build_model("small_resnet20"), torch.randn(3, 32, 32), tmp_path / "f.png"
    )
    fig = saved[-1]
    assert fig.get_suptitle()
    bars = [c for ax in fig.axes for c in ax.child_axes if c.get_ylabel() == "activation"]
    assert len(bars) == 3  # one per stage row
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) >= 16 + 3 * 6  # every filter and every channel has a title
