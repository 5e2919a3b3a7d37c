"""`pytest benchmarks --benchmark-autosave` keeps what a later comparison needs."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_autosave_keeps_the_raw_timings(benchmark_run):
    _, storage = benchmark_run  # the run that --benchmark-autosave saved (tests/conftest.py)
    (saved,) = storage.rglob("*.json")
    benches = json.loads(saved.read_text())["benchmarks"]
    assert len(benches) == 2
    for bench in benches:
        assert len(bench["stats"]["data"]) >= 3  # per-round times, not only their summary


def _benchmarks_conftest():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "rb_conftest", ROOT / "benchmarks" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rb_image_size_is_an_axis_and_default_sizes_keep_their_names():
    import pytest

    conftest = _benchmarks_conftest()

    def options(**given):
        flags = {f"--rb-{k.replace('_', '-')}": v for k, v in given.items()}
        return type("Config", (), {"getoption": staticmethod(lambda name: flags.get(name))})()

    configs = conftest.benchmark_configs(
        options(device="cpu", models="resnet50", batch_sizes="1", modes="inference",
                settings="fp32", image_size="224,288")
    )  # fmt: skip
    assert [c.image_size for c in configs] == [224, 288]
    assert [conftest.bench_id(c) for c in configs] == ["resnet50-b1-fp32", "resnet50-b1-fp32-288px"]
    with pytest.raises(pytest.UsageError, match="--rb-image-size 16 is too small for resnet50"):
        conftest.benchmark_configs(options(device="cpu", models="resnet50", image_size="16"))
