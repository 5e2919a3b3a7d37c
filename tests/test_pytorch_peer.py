"""scripts/pytorch_peer.py: its plain PyTorch script, and its refusals (its rounds are a measurement)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from resbench.datamodel import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import pytorch_peer as peer


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--settings", "int8+openvino"], "the plain script runs eager and compile"),
        (["--settings", "fp32+cl+cl"], "has 'cl' twice"),
        (["--model", "resnet9000"], "resnet9000"),
        (["--rounds", "0"], "--rounds must be 1 or more"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, says, capsys):
    assert peer.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_the_plain_script_quantises_and_compiles_int8_on_its_own():
    config = Config("small_resnet20", 2, device="cpu", precision="int8", channels_last=True,
                    backend="compile")  # fmt: skip
    got = peer.plain(config, 0.05)
    assert got["ips"] > 0 and got["runs"] >= 1
    assert got["median_ms"] == pytest.approx(2e3 / got["ips"])
