"""What every tool's command line promises: messages name only flags that exist, count flags are
bounded, and --help lists the models (issue 24)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from resbench import cli, data, layerstats, profile, report, sweep, train
from resbench.engine import flops
from resbench.models import list_models

TOOLS = {"sweep": sweep.main, "profile": profile.main, "train": train.main,
         "layerstats": layerstats.main, "flops": flops.main, "report": report.main,
         "data": data.main}  # fmt: skip
FLAG = re.compile(r"--[a-z][a-z0-9-]*")
# a command of some tool quoted in a message: its flags are that tool's
COMMAND = re.compile(r"python -m resbench\.(\w+)((?:\s+[^\s,;()`]+)*)")


def parser_flags(monkeypatch, capsys, tool: str) -> set[str]:
    """Every option string of ``tool``'s parser, caught as its main() parses ``--help``."""
    seen: list[argparse.ArgumentParser] = []
    real = argparse.ArgumentParser.parse_known_args

    def spy(self, *args, **kwargs):
        seen.append(self)
        return real(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_known_args", spy)
        with pytest.raises(SystemExit):
            TOOLS[tool](["--help"])
    capsys.readouterr()
    return {s for action in seen[0]._actions for s in action.option_strings}


def named_flags(tool: str, message: str) -> dict[str, set[str]]:
    """The flags a message names, by the tool whose parser must have them."""
    named: dict[str, set[str]] = {}
    for other, args in COMMAND.findall(message):
        named.setdefault(other, set()).update(FLAG.findall(args))
    named.setdefault(tool, set()).update(FLAG.findall(COMMAND.sub("", message)))
    return named


CPU20 = ["--model", "small_resnet20", "--device", "cpu"]
BAD = [
    ("sweep", ["--device", "cpu", "--models", "small_resnet20", "--precision", "int8"]),
    ("sweep", ["--device", "cpu", "--repeats", "1000000000"]),
    ("sweep", ["--device", "cpu", "--keep-errors"]),
    ("sweep", ["--device", "cpu", "--resume"]),
    ("sweep", ["--device", "cpu", "--resume", "--out", "OUT"]),
    ("sweep", ["--device", "cpu", "--compile", "default", "--backends", "onnxruntime"]),
    ("sweep", ["--device", "cpu", "--settings", "fp32+cl+cl"]),
    ("sweep", ["--device", "cpu", "--settings", "fp32+openvino+cl"]),
    ("sweep", ["--device", "cpu", "--settings", "bf16", "--compile", "default"]),
    ("sweep", ["--device", "cpu", "--models", "small_resnet20", "--find-max-batch"]),
    ("sweep", ["--device", "cpu", "--weights", "/nonexistent.pth"]),
    ("profile", [*CPU20, "--precision", "int8"]),
    ("profile", [*CPU20, "--compile", "default", "--backend", "onnxruntime"]),
    ("profile", [*CPU20, "--backend", "onnxruntime", "--channels-last", "on"]),
    ("profile", [*CPU20, "--steps", "0"]),
    ("profile", ["--model", "resnet50", "--device", "cpu", "--image-size", "7"]),
    ("profile", ["--model", "nosuch", "--device", "cpu"]),
    ("train", ["--device", "cpu", "--precision", "int8"]),
    ("train", ["--device", "cpu", "--precision", "fp16"]),
    ("train", ["--device", "cpu", "--model", "resnet50"]),
    ("train", ["--device", "cpu", "--epochs", "0"]),
    ("train", ["--device", "cpu", "--resume"]),
    ("train", ["--device", "cpu", "--resume", "--overwrite", "--out", "OUT"]),
    ("train", ["--device", "cpu", "--data-dir", "/nonexistent", "--out", "OUT"]),
    ("layerstats", [*CPU20, "--data-dir", "/nonexistent", "--out", "OUT"]),
    ("layerstats", [*CPU20, "--batch-size", "1", "--out", "OUT"]),
    ("layerstats", [*CPU20, "--depths", "21", "--out", "OUT"]),
    ("layerstats", [*CPU20, "--checkpoint", "/nonexistent.pt", "--out", "OUT"]),
    ("flops", ["--models", "nosuch"]),
    ("flops", ["--models", "resnet50", "--image-size", "7"]),
    ("report", []),
    ("report", ["OUT"]),
    ("report", ["OUT", "--pytest-benchmark", "OUT"]),
    ("data", ["--data-dir", "/nonexistent"]),
]


@pytest.mark.parametrize(("tool", "argv"), BAD, ids=[f"{t} {' '.join(a)}" for t, a in BAD])
def test_every_flag_an_error_names_exists_in_that_tools_parser(
    tool, argv, tmp_path, monkeypatch, capsys
):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    (tmp_path / "out").mkdir()
    assert TOOLS[tool](argv) == cli.EXIT_USAGE
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1, message
    for owner, flags in named_flags(tool, message).items():
        missing = flags - parser_flags(monkeypatch, capsys, owner)
        assert not missing, f"{message!r} names {sorted(missing)}, which {owner} lacks"


def test_the_check_itself_sees_a_flag_the_tool_lacks(monkeypatch, capsys):
    named = named_flags(
        "layerstats", "no data: pass --download, or run python -m resbench.data --x"
    )
    assert named == {"layerstats": {"--download"}, "data": {"--x"}}
    assert "--download" not in parser_flags(monkeypatch, capsys, "layerstats")
    assert "--download" in parser_flags(monkeypatch, capsys, "data")


@pytest.mark.parametrize(
    ("tool", "flag"),
    [
        ("sweep", "--models"),
        ("flops", "--models"),
        ("profile", "--model"),
        ("layerstats", "--model"),
    ],
)
def test_help_lists_every_model_name(tool, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        TOOLS[tool](["--help"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith(f"{flag} "))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].lstrip()[:1] in ("-", ""))
    shown = " ".join(lines[start:end])  # that flag's entry in the options list
    for name in list_models():
        assert re.search(rf"\b{re.escape(name)}\b", shown), f"{tool} {flag} help lacks {name}"


SIZE20 = ["--model", "small_resnet20", "--device", "cpu"]
HUGE = [
    ("sweep", ["--device", "cpu", "--models", "small_resnet20"], "--repeats", "1000000000"),
    ("sweep", ["--device", "cpu", "--models", "small_resnet20"], "--budget", "1e9"),
    ("sweep", ["--device", "cpu", "--models", "small_resnet20"], "--timeout", "1e9"),
    ("sweep", ["--device", "cpu", "--models", "small_resnet20"], "--max-minutes", "1e9"),
    ("sweep", ["--device", "cpu", "--models", "small_resnet20"], "--wait-quiet", "1e9"),
    ("sweep", ["--device", "cpu", "--models", "small_resnet20"], "--batch-sizes", "1000000"),
    ("profile", SIZE20, "--steps", "1000000000"),
    ("profile", SIZE20, "--wait", "1000000000"),
    ("profile", SIZE20, "--warmup", "1000000000"),
    ("profile", SIZE20, "--top-k", "1000000000"),
    ("profile", SIZE20, "--batch-size", "1000000000"),
    ("profile", SIZE20, "--image-size", "1000000"),
    ("layerstats", SIZE20, "--batch-size", "1000000000"),
    ("layerstats", SIZE20, "--train-steps", "1000000000"),
    ("layerstats", SIZE20, "--seed", str(2**64)),
    ("train", ["--device", "cpu"], "--epochs", "1000000000"),
    ("train", ["--device", "cpu"], "--runs", "1000000000"),
    ("train", ["--device", "cpu"], "--batch-size", "1000000000"),
    ("train", ["--device", "cpu"], "--workers", "1000000000"),
    ("train", ["--device", "cpu"], "--seed", str(2**64)),
    ("flops", ["--models", "small_resnet20"], "--image-size", "1000000"),
]


@pytest.mark.parametrize(("tool", "base", "flag", "value"), HUGE,
                         ids=[f"{t} {f}" for t, _, f, _ in HUGE])  # fmt: skip
def test_a_count_beyond_what_can_finish_is_refused_naming_the_bound(
    tool, base, flag, value, tmp_path, capsys
):
    out = [] if tool == "flops" else ["--out", str(tmp_path / "out")]
    assert TOOLS[tool]([*base, flag, value, *out]) == cli.EXIT_USAGE
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1, message
    assert f"{flag} must be " in message and f"at most {cli.BOUNDS[flag].high}; got" in message
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize(
    ("tool", "argv"),
    [
        (sweep, ["--device", "cpu", "--models", "small_resnet20", "--batch-sizes", "1"]),
        (profile, ["--model", "small_resnet20", "--batch-size", "1", "--device", "cpu"]),
        (layerstats, ["--model", "small_resnet20"]),
    ],
)
def test_an_out_that_names_a_file_is_one_line_and_exit_2(tool, argv, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert tool.main([*argv, "--out", str(afile)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{afile} is a file, not a folder: give --out a folder" in err[0]
    assert afile.read_text() == "not a folder"


def test_a_report_out_that_names_a_file_and_a_negative_threshold_are_usage_errors(tmp_path, capsys):
    from test_report import result, write_run

    write_run(tmp_path / "run", [result()])
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert report.main([str(tmp_path / "run"), "--out", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    run = str(tmp_path / "run")
    for value in ("-5%", "-0.5"):
        assert report.main([run, "--compare", run, "--threshold", value]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"resbench.report: error: --threshold must be 0 or more; got {value}"


def test_a_garbage_line_is_warned_of_once_however_often_it_is_read(tmp_path):
    import warnings

    from resbench import runfolder

    path = tmp_path / "results.jsonl"
    path.write_text('garbage\n{"model": "resnet18"\n')
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(3):  # a sweep reads it to resume, to report and to judge the load
            runfolder.read_results_file(path)
    said = [str(w.message) for w in seen]
    assert len(said) == 2 and said[0].startswith(f"{path}:1: skipping")
    assert said[1].startswith(f"{path}:2: skipping")


def test_a_count_takes_its_number_in_the_trainer_and_the_sweep():
    assert [cli.plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert cli.plural(1, "finished Result") == "1 finished Result"
    # "1 run(s)" is what cli.plural replaced: no printed text of theirs hedges a plural again
    root = Path(__file__).resolve().parent.parent / "resbench"
    for path in sorted([*(root / "train").glob("*.py"), *(root / "sweep").glob("*.py")]):
        assert "(s)" not in path.read_text(), path
