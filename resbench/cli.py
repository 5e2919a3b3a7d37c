"""Shared command-line conventions: the same flag means the same thing in every tool.

A user's mistake is one line on stderr naming the valid choices, and exit code 2 (no traceback):
tools raise ``UsageError`` (or let a ``ValueError`` from validation through ``run_cli``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import math
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from resbench import settings
from resbench.engine.devices import default_device, parse_device
from resbench.models import list_models
from resbench.settings import COMPILE_MODES, PRECISIONS

MODEL_GROUPS = ("all", "imagenet", "cifar")
EXIT_USAGE = 2  # a user's mistake: one line on stderr
EXIT_IO = 1  # a file could not be read or written (full or read-only disk, --out under a file)


class UsageError(ValueError):
    """Bad command-line input: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors raise UsageError, so ``run_cli`` reports them as one line, exit 2.
    A negative number with a unit ("--threshold -5%") is taken as a value, so its own check
    says what is wrong with it, not argparse's "expected one argument"."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d+(\.\d*)?%?$|^-\.\d+%?$")

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


commands_run = 0  # how many tool commands this process has run (run_cli), e.g. report then sweep


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run a tool's body: a ValueError from validation is one line and exit 2, and so is a folder
    to write that is a file (an --out naming one); a failed read or write (OSError) one line
    naming the path and exit 1; warnings are one line each."""
    global commands_run
    commands_run += 1  # a new command: runfolder warns of each bad line again, once
    with one_line_warnings(prog):
        try:
            return body()
        except ValueError as exc:  # includes UsageError
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except (FileExistsError, NotADirectoryError) as exc:  # --out naming a file: the user's
            print(
                f"{prog}: error: {blocking_file(exc.filename)} is a file, not a folder: give "
                "--out a folder (a new one, or a run folder)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        except OSError as exc:
            print(f"{prog}: error: {os_error_text(exc)}", file=sys.stderr)
            return EXIT_IO


def blocking_file(path) -> str:
    """The file that stands where a folder must: ``path`` itself, or the nearest of its parents
    that exists and is no folder ("run" under a file called "file": "file")."""
    import os.path

    here = str(path)
    while here and not os.path.exists(here):
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return here if here and os.path.exists(here) and not os.path.isdir(here) else str(path)


def os_error_text(exc: OSError) -> str:
    """ "No space left on device: results/run/results.jsonl" from any OSError."""
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    what = exc.strerror or str(exc)
    return f"{what}: {where}" if where else what


@contextlib.contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Format each warning as ``prog: warning: message`` (no source line), then restore."""

    def one_line(message, category, filename, lineno, line=None) -> str:
        return f"{prog}: warning: {message}\n"

    saved = warnings.formatwarning
    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = saved


def plural(n: int, noun: str) -> str:
    """ "1 epoch", "2 epochs", "0 runs": a count with its noun in the number the count takes."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def split_list(text: str, flag: str = "the list") -> list[str]:
    """Comma-separated items; an empty item ("8,,16", "") is refused rather than dropped."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise UsageError(f"{flag} is empty")
    if not all(items):
        raise UsageError(f"{flag} has an empty item in {text!r}")
    return items


def finite(value: float, flag: str) -> float:
    if not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number; got {value}")
    return value


def positive(value: float, flag: str) -> float:
    """``value`` if it is finite and above 0, else a UsageError naming ``flag``."""
    if finite(value, flag) <= 0:
        raise UsageError(f"{flag} must be positive; got {value}")
    return value


def at_least(value: float, flag: str, low: float) -> float:
    """``value`` if it is finite and at least ``low``, else a UsageError naming ``flag``."""
    if finite(value, flag) < low:
        raise UsageError(f"{flag} must be at least {low}; got {value}")
    return value


def in_range(value: float, flag: str, low: float, high: float) -> float:
    """``value`` if it is finite and within [low, high], else a UsageError naming ``flag``."""
    if not low <= finite(value, flag) <= high:
        raise UsageError(f"{flag} must be between {low} and {high}; got {value}")
    return value


class Bound(NamedTuple):
    """The values a count flag takes: what can finish, so a typo is refused instead of run for ever."""

    low: float
    high: float
    above: bool = False  # low itself is refused: the value must be above it (a 0-second budget)


MAX_BATCH = 1 << 16  # the largest batch any tool takes, and where the max-batch search stops
# every count flag of every tool, one entry per flag name (a name means the same in every tool)
BOUNDS: dict[str, Bound] = {
    "--repeats": Bound(1, 100),  # preparations per Config
    "--forks": Bound(1, 100),  # fresh worker processes per Config (the sweep's passes)
    "--budget": Bound(0, 3600, above=True),  # seconds of measuring per Config
    "--timeout": Bound(0, 24 * 3600, above=True),  # seconds per Config in an isolated worker
    "--max-minutes": Bound(0, 7 * 24 * 60, above=True),  # a week
    "--wait-quiet": Bound(0, 3600),  # seconds to wait for a quiet machine, per preparation
    "--batch-size": Bound(1, MAX_BATCH),
    "--batch-sizes": Bound(1, MAX_BATCH),
    "--rb-batch-sizes": Bound(1, MAX_BATCH),
    "--image-size": Bound(1, 4096),
    "--steps": Bound(1, 100),  # profiled steps: each one's trace is kept
    "--wait": Bound(0, 100),
    "--warmup": Bound(0, 100),
    "--top-k": Bound(1, 10_000),
    "--train-steps": Bound(0, 100_000),
    "--epochs": Bound(1, 1000),
    "--runs": Bound(1, 100),
    "--workers": Bound(0, 256),
    "--eval-images": Bound(1, 10_000_000),  # labelled images scored per row
    "--calibration-images": Bound(1, 100_000),  # int8's calibration images
    "--max-accuracy-drop": Bound(0, 100),  # points of top-1
    "--seed": Bound(
        0, 2**31 - 1
    ),  # the trainer's run i seeds with seed + i; numpy's end at 2**32-1
}


def bounded(value: float, flag: str) -> float:
    """``value`` if it lies within ``flag``'s Bound, else a UsageError naming the bound."""
    low, high, above = BOUNDS[flag]
    if isinstance(value, float):  # an int of any size compares; inf and NaN are no count
        finite(value, flag)
    if (value <= low if above else value < low) or value > high:
        lowest = (
            "positive" if above and low == 0 else f"above {low}" if above else f"at least {low}"
        )
        raise UsageError(f"{flag} must be {lowest} and at most {high}; got {value}")
    return value


def not_empty(text: str, flag: str) -> str:
    if not text.strip():
        raise UsageError(f"{flag} is empty")
    return text


def min_image_size(model: str) -> int:
    """The smallest input side ``model`` takes whole: its total downsampling (last map 1x1)."""
    import torch

    from resbench.models import build_model

    with torch.device("meta"):  # shapes only: no weights drawn, no forward pass
        return build_model(model).downsampling


def check_image_size(model: str, size: int | None, flag: str = "--image-size") -> int | None:
    """``size`` if ``model`` can take it (None: the model's default), else a UsageError."""
    if size is None:
        return None
    smallest = min_image_size(model)
    if size < smallest:
        raise UsageError(
            f"{flag} {size} is too small for {model}: its feature maps shrink {smallest}x, so the "
            f"smallest size it takes is {smallest}"
        )
    return size


def models_help(default: str | None = None, many: bool = True) -> str:
    """--models (or --model) help that lists the registry's names as they are now."""
    names = ", ".join(list_models())
    what = f"names or groups {', '.join(MODEL_GROUPS)}; the names: " if many else "one of: "
    return what + names + (f" (default: {default})" if default else "")


def parse_models(text: str) -> list[str]:
    names: list[str] = []
    for item in split_list(text, "--models"):
        if item in MODEL_GROUPS:
            names += list_models(item)
        elif item in list_models():
            names.append(item)
        else:
            raise UsageError(
                f"unknown model {item!r}; choose one of: {', '.join(MODEL_GROUPS + tuple(list_models()))}"
            )
    if not names:
        raise UsageError("--models is empty")
    return list(dict.fromkeys(names))


def parse_positive_ints(text: str, flag: str) -> list[int]:
    """Sorted distinct positive integers, each within ``flag``'s Bound where it has one."""
    values = []
    for item in split_list(text, flag):
        try:
            value = int(item)
        except ValueError:
            raise UsageError(f"{flag} takes positive integers; got {item!r}") from None
        if value < 1:
            raise UsageError(f"{flag} takes positive integers; got {value}")
        if flag in BOUNDS:
            bounded(value, flag)
        values.append(value)
    if not values:
        raise UsageError(f"{flag} is empty")
    return sorted(set(values))


def parse_positive_floats(text: str, flag: str) -> list[float]:
    """Sorted distinct finite numbers above 0 (rates, bounds); one line naming ``flag`` else."""
    values = []
    for item in split_list(text, flag):
        try:
            value = float(item)
        except ValueError:
            raise UsageError(f"{flag} takes numbers above 0; got {item!r}") from None
        values.append(positive(value, flag))
    return sorted(set(values))


def parse_choices(text: str, flag: str, choices: Sequence[str]) -> list[str]:
    values = split_list(text, flag)
    for value in values:
        if value not in choices:
            raise UsageError(f"unknown {flag} value {value!r}; choose one of: {', '.join(choices)}")
    if not values:
        raise UsageError(f"{flag} is empty")
    return list(dict.fromkeys(values))


def parse_on_off(text: str, flag: str) -> list[bool]:
    return [v == "on" for v in parse_choices(text, flag, ("off", "on"))]


def parse_settings(text: str, flag: str) -> list[dict]:
    """ "fp32,tf32+cl,bf16+cl+compile,int8+openvino" -> each setting's fields (settings.parse_label)."""
    fields = []
    for label in split_list(text, flag):
        try:
            fields.append(settings.parse_label(label))
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None
    if not fields:
        raise UsageError(f"{flag} is empty")
    return list({tuple(f.values()): f for f in fields}.values())


def parse_devices(text: str) -> list[str]:
    devices = split_list(text, "--device")
    for device in devices:
        parse_device(device)  # raises ValueError naming what exists
    return list(dict.fromkeys(devices))


def add_device(parser: argparse.ArgumentParser, many: bool = False) -> None:
    parser.add_argument(
        "--device",
        default=default_device(),
        help=f"cpu, cuda, cuda:N or mps{'; a list such as cpu,cuda compares devices' if many else ''}"
        " (default: %(default)s, the best available)",
    )


def add_setting_flags(
    parser: argparse.ArgumentParser, many: bool, precisions: Sequence[str] = tuple(PRECISIONS)
) -> None:
    """--precision, --channels-last, --compile: lists in the sweep, single values elsewhere;
    ``precisions``: the ones the tool runs (the trainer's train)."""
    s = "s, comma-separated" if many else ""
    parser.add_argument(
        "--precision",
        default="fp32",
        help=f"precision{s}: {', '.join(precisions)} (default: %(default)s)",
    )
    parser.add_argument(
        "--channels-last",
        default="off",
        help=f"NHWC memory format{s}: off, on (default: %(default)s)",
    )
    parser.add_argument(
        "--compile",
        default="off",
        help=f"torch.compile mode{s}: {', '.join(COMPILE_MODES)} (default: %(default)s)",
    )


def timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
