from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from resbench import profile
from resbench.engine.measure import Config
from resbench.models import build_model


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
    by_name = {r[0]: r for r in rows}
    conv = by_name["aten::mkldnn_convolution"]  # the row that spends the time holds the FLOPs
    assert conv[5] and float(conv[5]) > 0
    assert not by_name.get("aten::conv2d", ["", "", "", "", "", ""])[5]

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
        (["--model", "resnet18", "--batch-size", "0"], "--batch-size must be at least 1"),
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


class FakeEvent:
    """The parts of torch.autograd.profiler_util.FunctionEvent that the stage split reads."""

    def __init__(self, name, start, end, kernels=(), seq=-1, children=()):
        self.name, self.sequence_nr = name, seq
        self.time_range = SimpleNamespace(start=start, end=end)
        self.cpu_time_total = end - start
        self.kernels = [SimpleNamespace(name=n, duration=us) for n, us in kernels]
        self.cpu_parent, self.cpu_children = None, list(children)
        for child in self.cpu_children:
            child.cpu_parent = self

    def walk(self):
        yield self
        for child in self.cpu_children:
            yield from child.walk()


def test_cuda_stage_time_counts_kernels_inside_ranges_not_the_annotation_span():
    # what torch.profiler reports for one CUDA train step: a stage range carries its own GPU
    # annotation (same name, whole span with idle gaps) among its "kernels" (pytorch#130730)
    conv1 = FakeEvent("aten::conv2d", 20, 50, [("conv1_fwd", 30)], seq=7)
    relu1 = FakeEvent("aten::relu", 60, 70, [("relu_fwd", 5)], seq=8)
    layer1 = FakeEvent("stage:layer1", 10, 100, [("stage:layer1", 500)], children=[conv1, relu1])
    conv2 = FakeEvent("aten::conv2d", 120, 180, [("conv2_fwd", 40)], seq=9)
    layer2 = FakeEvent("stage:layer2", 110, 200, [("stage:layer2", 400)], children=[conv2])
    # backward nodes run on the autograd thread, linked to the forward ops by sequence number
    back2 = FakeEvent(profile.BACKWARD_PREFIX + "ConvolutionBackward0", 300, 400, seq=9, children=[
        FakeEvent("aten::convolution_backward", 310, 390, [("dgrad", 80), ("wgrad", 70)])])  # fmt: skip
    back_relu = FakeEvent(profile.BACKWARD_PREFIX + "ReluBackward0", 410, 420, seq=8, children=[
        FakeEvent("aten::threshold_backward", 411, 419, [("relu_bwd", 6)])])  # fmt: skip
    back1 = FakeEvent(profile.BACKWARD_PREFIX + "ConvolutionBackward0", 430, 500, seq=7, children=[
        FakeEvent("aten::convolution_backward", 431, 499, [("dgrad", 60)])])  # fmt: skip
    later = FakeEvent("stage:layer1", 1500, 1600, [("conv1_fwd", 999)])  # the next step's
    steps = [FakeEvent(f"ProfilerStep#{i}", a, b)
             for i, (a, b) in enumerate([(0, 1000), (1000, 1900), (1900, 3100)])]  # fmt: skip
    roots = [layer1, layer2, back2, back_relu, back1, later]
    prof = SimpleNamespace(events=lambda: [e for r in roots for e in r.walk()] + steps)
    model = SimpleNamespace(stage_names=("layer1", "layer2"))

    step = profile.median_step(prof)
    assert step is steps[0]  # 1000 us: the median step by wall time
    cuda = profile.stages_frame(prof, True, model, step).set_index(["stage", "pass"])["ms"]
    assert cuda.to_dict() == pytest.approx({
        ("layer1", "forward"): 0.035, ("layer1", "backward"): 0.066,
        ("layer2", "forward"): 0.040, ("layer2", "backward"): 0.150,
    })  # fmt: skip
    assert profile.kernel_time_us(prof, step) == pytest.approx(35 + 40 + 150 + 6 + 60)
    cpu = profile.stages_frame(prof, False, model, step).set_index(["stage", "pass"])["ms"]
    assert cpu[("layer1", "forward")] == pytest.approx(0.090)  # the range's wall time on a CPU


def test_stages_from_a_saved_trace_match_the_live_split(tmp_path):
    """scripts/stages_from_trace.py rebuilds the event tree from trace.json.gz; on a CPU trace its
    split (wall time per range) must match the one the profiler's own events gave."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    try:
        import stages_from_trace
    finally:
        sys.path.pop(0)
    live = profile.run_profile(
        Config("small_resnet20", 4, device="cpu", mode="train"), tmp_path, steps=3, wait=0, warmup=1
    )
    events = stages_from_trace.events_from_trace(tmp_path / "trace.json.gz")
    prof = SimpleNamespace(events=lambda: events)
    step = profile.median_step(prof)
    assert step.cpu_time_total / 1e3 == pytest.approx(live.profiled_step_ms, rel=1e-3)
    model = build_model("small_resnet20")
    again = profile.stages_frame(prof, False, model, step)
    assert (
        again[["stage", "pass"]].values.tolist() == live.stages[["stage", "pass"]].values.tolist()
    )
    assert again["ms"].to_numpy() == pytest.approx(live.stages["ms"].to_numpy(), rel=0.02)


def test_flops_move_to_the_descendant_that_spends_the_time():
    from types import SimpleNamespace as Event

    leaf = Event(key="aten::mkldnn_convolution", flops=0, self_cpu_time_total=90, cpu_children=[])
    mid = Event(key="aten::_convolution", flops=0, self_cpu_time_total=2, cpu_children=[leaf])
    top = Event(key="aten::conv2d", flops=1000, self_cpu_time_total=1, cpu_children=[mid])
    mm = Event(key="aten::addmm", flops=50, self_cpu_time_total=5, cpu_children=[])
    moved = profile.flops_on_working_rows([top, mid, leaf, mm], on_cuda=False)
    assert moved == {"aten::mkldnn_convolution": 1000, "aten::addmm": 50}


def test_an_emulated_precision_is_refused_in_one_line_unless_allowed(tmp_path, monkeypatch, capsys):
    from resbench import env

    monkeypatch.setattr(env, "cpu_flags", lambda: frozenset({"avx2", "fma"}))  # no bf16 units
    argv = ["--model", "small_resnet20", "--batch-size", "1", "--device", "cpu",
            "--precision", "bf16", "--steps", "1", "--warmup", "0", "--out", str(tmp_path / "p")]  # fmt: skip
    assert profile.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "only emulated" in err and "--allow-emulated" in err
    assert profile.main([*argv, "--allow-emulated"]) == 0
