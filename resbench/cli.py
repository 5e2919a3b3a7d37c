"""Shared command-line conventions: the same flag means the same thing in every tool.

A user's mistake is one line on stderr naming the valid choices, and exit code 2 (no traceback):
tools raise ``UsageError`` (or let a ``ValueError`` from validation through ``run_cli``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from collections.abc import Callable, Sequence

from resbench import settings
from resbench.devices import default_device, parse_device
from resbench.models import list_models
from resbench.settings import COMPILE_MODES, PRECISIONS

MODEL_GROUPS = ("all", "imagenet", "cifar")


class UsageError(ValueError):
    """Bad command-line input: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors raise UsageError, so ``run_cli`` reports them as one line, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run a tool's body; a ValueError from validation becomes one line and exit code 2."""
    try:
        return body()
    except ValueError as exc:  # includes UsageError
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_models(text: str) -> list[str]:
    names: list[str] = []
    for item in split_list(text):
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
    values = []
    for item in split_list(text):
        try:
            value = int(item)
        except ValueError:
            raise UsageError(f"{flag} takes positive integers; got {item!r}") from None
        if value < 1:
            raise UsageError(f"{flag} takes positive integers; got {value}")
        values.append(value)
    if not values:
        raise UsageError(f"{flag} is empty")
    return sorted(set(values))


def parse_choices(text: str, flag: str, choices: Sequence[str]) -> list[str]:
    values = split_list(text)
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
    for label in split_list(text):
        try:
            fields.append(settings.parse_label(label))
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None
    if not fields:
        raise UsageError(f"{flag} is empty")
    return list({tuple(f.values()): f for f in fields}.values())


def parse_devices(text: str) -> list[str]:
    devices = split_list(text) or [default_device()]
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


def add_setting_flags(parser: argparse.ArgumentParser, many: bool) -> None:
    """--precision, --channels-last, --compile: lists in the sweep, single values elsewhere."""
    s = "s, comma-separated" if many else ""
    parser.add_argument(
        "--precision",
        default="fp32",
        help=f"precision{s}: {', '.join(PRECISIONS)} (default: %(default)s)",
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
