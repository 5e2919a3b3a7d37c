"""The --rb-* options of `pytest benchmarks`: a value that names nothing stops the run (issue 24)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from resbench import cli

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("rb_conftest", ROOT / "benchmarks" / "conftest.py")
rb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rb)


class Options:
    """A pytest config's getoption over the --rb-* options given (the rest not given)."""

    def __init__(self, **given) -> None:
        self.given = {"--rb-" + k.replace("_", "-"): v for k, v in given.items()}

    def getoption(self, name):
        return self.given.get(name, False if name == "--rb-all" else None)


BASE = {"device": "cpu", "models": "small_resnet20", "batch_sizes": "2"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"modes": "inference,trian"},
            "unknown --rb-modes value 'trian'; choose one of: inference",
        ),
        ({"backends": "eager,trt"}, "unknown --rb-backends value 'trt'"),
        ({"settings": "fp32+cl+cl"}, "--rb-settings: 'fp32+cl+cl' has 'cl' twice"),
        ({"settings": "int8+onnxruntime+openvino"}, "names two backends"),
        ({"device": "tpu"}, "--rb-device: unknown device 'tpu'"),
        (
            {"batch_sizes": "100000"},
            f"--rb-batch-sizes must be at least 1 and at most {cli.MAX_BATCH}",
        ),
    ],
)
def test_a_value_that_names_nothing_is_a_usage_error(given, message):
    with pytest.raises(pytest.UsageError, match=message.replace("+", r"\+")):
        rb.benchmark_configs(Options(**(BASE | given)))


def test_backends_run_each_setting_as_the_sweep_does_and_a_label_keeps_its_own():
    configs = rb.benchmark_configs(
        Options(**BASE, modes="inference", settings="fp32+openvino,fp32", backends="compile,eager")
    )
    assert [c.setting for c in configs] == ["fp32+openvino", "fp32+compile", "fp32"]


def test_a_mode_typo_stops_pytest_with_one_line():
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q", "-p",
           "no:cacheprovider", "--rb-modes", "inference,trian"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "ERROR: unknown --rb-modes value 'trian'" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
