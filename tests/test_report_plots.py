"""The other tools' figures and tables read at a glance: trainer, layerstats."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from resbench import layerstats, report
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


def test_trainer_plot_legend_sits_outside_the_axes(tmp_path, monkeypatch):
    saved = _capture_figures(monkeypatch)
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        # a short run: accuracy still low at the end, in the lower right where a legend sat
        pd.DataFrame({"cum_train_s": [5.0, 10.0, 15.0], "test_acc": [0.1, 0.2, 0.3]}).to_csv(
            run / "train.csv", index=False
        )
        runs.append((run, {"seed": seed}))
    trainrun.accuracy_plot(runs, trainrun.TrainConfig(model="small_resnet20"), tmp_path / "a.png")
    fig = saved[0]
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["seed 0", "seed 1"]


def test_roofline_ticks_are_labelled_numbers_not_bare_digits():
    import dataclasses

    from test_report import result

    from resbench.report import html as report_html
    from resbench.report import plots

    rows = [
        dataclasses.replace(result(batch=b, ms=10 * b, seed=b), peak_tflops=1.0) for b in (1, 8)
    ]
    roof = report.roofline(report.results_frame(rows), {"bandwidth_gbs": {"cpu": 20.0}})
    plt = pyplot()
    fig = plots.roofline_plot(plt, roof, report.colours(roof["setting"]), "t")
    fig.canvas.draw()
    ax = fig.axes[0]
    for axis in (ax.xaxis, ax.yaxis):
        lo, hi = sorted(axis.get_view_interval())
        major = [t for t in axis.get_major_ticks() if lo <= t.get_loc() <= hi]
        assert len(major) >= 2
        assert all(float(t.label1.get_text().replace(",", "")) == pytest.approx(t.get_loc())
                   for t in major)  # fmt: skip
        assert all(not t.label1.get_text() for t in axis.get_minor_ticks())
    plt.close(fig)
    page = report_html.roofline_figure(roof, report.colours(roof["setting"]), "t")
    for axis in (page.layout.xaxis, page.layout.yaxis):
        assert len(axis.tickvals) >= 2
        assert [float(t.replace(",", "")) for t in axis.ticktext] == pytest.approx(axis.tickvals)
