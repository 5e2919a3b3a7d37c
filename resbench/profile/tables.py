"""The tables and plot of a profile: ops.md (operators, by category), stages.md and stages.png.

``write_tables(profile, out, top_k)`` renders a ``Profile``: what ``resbench.profile.run_profile``
measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from resbench.engine.measure import Config
from resbench.report import pyplot


@dataclass
class Profile:
    config: Config
    step_ms: float  # median step time measured without the profiler
    profiled_step_ms: float  # the median ProfilerStep's time, with the profiler on
    ops: pd.DataFrame
    stages: pd.DataFrame | None
    paths: dict[str, Path]
    foreign_cpu: float = 0.0  # cores other processes kept busy while profiling
    kernel_ms: float | None = None  # CUDA: kernel time of the median profiled step

    @property
    def stage_base(self) -> tuple[float, str]:
        """What stage shares are of: kernel time on CUDA (the profiler inflates host time), else
        the step's wall time."""
        if self.kernel_ms:
            return self.kernel_ms, "kernel time"
        return self.profiled_step_ms, "profiled step"


def _ms(v: float) -> str:
    return f"{v:.3f}"


def write_tables(p: Profile, out: Path, top_k: int) -> None:
    c = p.config
    clock = "self CUDA time" if c.device.startswith("cuda") else "self CPU time"
    head = (
        f"{c.model}, batch {c.batch_size}, {c.mode}, {c.setting}, on {c.device}. "
        f"Step: {p.step_ms:.3f} ms median without the profiler, {p.profiled_step_ms:.3f} ms for the "
        f"median profiled step. Operators: per step, averaged over the profiled steps; stages: the "
        f"median step. Other processes kept {p.foreign_cpu:.2f} cores busy while profiling."
    )
    if p.kernel_ms:
        busy = p.kernel_ms / p.profiled_step_ms
        head += f" Kernels ran {p.kernel_ms:.3f} ms, {100 * busy:.0f}% of the profiled step" + (
            "; the rest is launch overhead, host work and the profiler's own."
            if busy < 0.9
            else "."
        )
    ops = p.ops
    top = ops.head(top_k)
    rest = ops.iloc[top_k:]
    table = pd.DataFrame(
        {
            "operator": top["operator"],
            "calls": top["calls"],
            "total ms": top["total_ms"].map(_ms),
            "self ms": top["self_ms"].map(_ms),
            "% of self time": top["share"].map(lambda v: f"{100 * v:.1f}"),
            "GFLOPs": top["flops"].map(lambda v: f"{v / 1e9:.2f}" if v else ""),
            "TFLOP/s": top["tflops"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}"),
            "self mem MB": top["self_memory_mb"].map(lambda v: f"{v:.1f}"),
        }
    )
    if len(rest):
        table.loc[len(table)] = [
            f"(the other {len(rest)} operators)", int(rest["calls"].sum()), "",
            _ms(rest["self_ms"].sum()), f"{100 * rest['share'].sum():.1f}", "", "", "",
        ]  # fmt: skip
    by_cat = (
        ops.groupby("category")[["self_ms", "share", "flops"]]
        .sum()
        .sort_values("self_ms", ascending=False)
    )
    cat_table = pd.DataFrame(
        {
            "category": by_cat.index,
            "self ms": by_cat["self_ms"].map(_ms).values,
            "% of self time": by_cat["share"].map(lambda v: f"{100 * v:.1f}").values,
            "GFLOPs": by_cat["flops"].map(lambda v: f"{v / 1e9:.2f}" if v else "").values,
            "TFLOP/s": [
                f"{f / (t / 1e3) / 1e12:.2f}" if f and t > 0 else ""
                for f, t in zip(by_cat["flops"], by_cat["self_ms"], strict=True)
            ],
        }
    )
    text = [
        f"# Operators by {clock}",
        "",
        head,
        "",
        table.to_markdown(index=False, disable_numparse=True),
        "",
        "## By category",
        "",
        "GFLOPs as the profiler counts them (forward convolutions and matrix products; backward "
        "operators are not counted), per step, shown on the operator that spends the time (a "
        "convolution's on `aten::mkldnn_convolution` or `aten::cudnn_convolution`, not on "
        "`aten::conv2d`).",
        "",
        cat_table.to_markdown(index=False, disable_numparse=True),
        "",
    ]
    (out / "ops.md").write_text("\n".join(text))
    p.paths["ops"] = out / "ops.md"
    if p.stages is None:
        (out / "stages.md").write_text(
            f"# Stages\n\n{head}\n\nNot available under torch.compile: the compiled graph fuses "
            "operators across stage boundaries. Profile with --compile off for the split.\n"
        )
        p.paths["stages"] = out / "stages.md"
        return
    text = ["# Step time by stage", "", head, "", stages_markdown(p.stages, *p.stage_base)]
    text += ["![stages](stages.png)", ""]
    (out / "stages.md").write_text("\n".join(text))
    p.paths["stages"] = out / "stages.md"
    p.paths["stages_png"] = out / "stages.png"
    _stages_plot(p, out / "stages.png")


def stages_markdown(stages: pd.DataFrame, base_ms: float, base: str) -> str:
    """The stage table with each row's share of ``base_ms`` (the step, or its kernel time)."""
    st = stages.copy()
    total = st["ms"].sum()
    st[f"% of {base}"] = (100 * st["ms"] / base_ms).map(lambda v: f"{v:.1f}")
    st["ms"] = st["ms"].map(_ms)
    rest = (
        "kernels launched outside the stage ranges"
        if base == "kernel time"
        else "time between them (Python, the autograd engine, the profiler)"
    )
    return "\n".join([
        st.to_markdown(index=False, disable_numparse=True),
        "",
        f"Stages sum to {total:.3f} ms = {100 * total / base_ms:.1f}% of the {base}; the rest is "
        f"{rest}.",
        "",
    ])  # fmt: skip


def _stages_plot(p: Profile, path: Path) -> None:
    plt = pyplot()

    table = p.stages.pivot_table(index="stage", columns="pass", values="ms", sort=False)
    table = table.reindex(
        columns=[c for c in ("forward", "backward", "update") if c in table.columns]
    )
    fig, ax = plt.subplots(figsize=(7, 3.5))
    table.plot.bar(ax=ax, stacked=True, rot=0)
    ax.set_ylabel("ms per step")
    c = p.config
    ax.set_title(f"{c.model} b{c.batch_size} {c.mode} {c.setting} on {c.device}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
