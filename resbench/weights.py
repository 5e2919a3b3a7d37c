"""Real weights in: a torchvision state dict or a resbench trainer checkpoint, read safely, once.

Files load with ``weights_only=True``, so a crafted one cannot run code; a file that is missing,
empty, damaged, not written by ``torch.save`` at all (a text or HTML file named .pt), a pickled
model or not a state dict is a ValueError of one line. The network's
classes and input channels come from a checkpoint's data record (or the fc and first conv's shapes),
so ``build_model(name, **w.overrides())`` builds the network the tensors were trained in. Usage::

    from resbench import weights
    w = weights.read("checkpoint.pt")             # Weights: kind, model, num_classes, in_channels
    weights.check(w, ["small_resnet20"])          # ValueError naming the models it does not fit
    model = weights.load_into(build_model("small_resnet20", **w.overrides()), w)
"""

from __future__ import annotations

import os
import pickle
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from resbench.models.registry import build_model, list_models

# torch's weights_only message is a paragraph with terminal bold codes; its one useful line names
# the class it refused
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# the tensors that say a network's input channels (the first conv; a deep stem's first) and classes
_FIRST_CONV = ("conv1.weight", "conv1.0.weight")
_HEAD = "fc.weight"
# what torch.save writes: a zip archive (PyTorch 1.6 on), before it a pickle stream opening with the
# PROTO opcode (protocol 2, its default), and in PyTorch's first releases a tar archive
_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"


def _check_torch_file(path: Path) -> None:
    """A ValueError of one line when ``path`` is none of the formats ``torch.save`` writes.

    ``torch.load`` takes any file that is not a zip archive for its legacy format and feeds its
    bytes to the unpickler as opcodes, so a text file fails at whatever its first letters mean to
    pickle ("a" is APPEND: ``IndexError: pop from empty list``; "h" is BINGET: ``KeyError``;
    others read as "pickled Python objects"); its first bytes say what it is instead."""
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith((_ZIP, _PICKLE)) or tarfile.is_tarfile(path):
        return
    raise ValueError(
        f"{path} is not a checkpoint: torch.save writes a zip archive (or, before PyTorch 1.6, a "
        f"pickle), and this file begins {head!r} (a text or HTML file named as one?)"
    )


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """A file written by ``torch.save`` of tensors and plain data, loaded with
    ``weights_only=True``; anything else (code, a corrupt or empty file) is a ValueError of one
    line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such file {str(path)!r}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): a download or a save that did not finish?")
    _check_torch_file(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = _ANSI.sub("", str(exc))
        found = _GLOBAL.search(text)
        what = f"a pickled {found.group(1)}" if found else "pickled Python objects"
        raise ValueError(
            f"{path} holds {what}, not only tensors, so it is not loaded (it could run code); "
            "save the state dict instead: torch.save(model.state_dict(), path)"
        ) from None
    except Exception as exc:  # truncated zip, wrong magic number, EOF
        first = (_ANSI.sub("", str(exc)).strip().splitlines() or [""])[0]
        first = first.split(". ")[0]  # torch's first sentence says it; the rest is advice
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: {first})"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a checkpoint: it holds a {type(state).__name__}")
    return state


@dataclass(frozen=True, eq=False)
class Weights:
    """The tensors of one file and what it says about the network they belong to."""

    path: str
    kind: str  # "torchvision" (a bare state dict) | "checkpoint" (resbench's trainer)
    state: dict[str, torch.Tensor]
    model: str | None = None  # the architecture a trainer checkpoint names
    num_classes: int | None = None
    in_channels: int | None = None
    data: dict | None = None  # a trainer checkpoint's data record (dataset, preprocess, ...)

    def overrides(self) -> dict:
        """``build_model`` keyword arguments for the network these tensors came from."""
        return {
            k: v
            for k, v in (("num_classes", self.num_classes), ("in_channels", self.in_channels))
            if v is not None
        }

    def fits(self, name: str) -> str | None:
        """None when the tensors fit registry model ``name`` (names and shapes), else why not."""
        if self.model is not None and self.model != name:
            return f"the checkpoint is of {self.model}"
        with torch.device("meta"):  # shapes only: no weights drawn
            model = build_model(name, **self.overrides())
        return _mismatch(model.state_dict(), self.state, name)


def read(path: str | os.PathLike) -> Weights:
    """A torchvision state dict (or ``{"state_dict": ...}``) or a trainer checkpoint (``{"model":
    ..., "config": {"model": name}, "data": {...}}``), on the CPU; a ValueError of one line else."""
    state = load_checkpoint(path, map_location="cpu")
    record: dict = {}
    config: dict = {}
    if isinstance(state.get("model"), dict):  # resbench's trainer
        kind, tensors = "checkpoint", state["model"]
        config = state.get("config") if isinstance(state.get("config"), dict) else {}
        record = state.get("data") if isinstance(state.get("data"), dict) else {}
    elif isinstance(state.get("state_dict"), dict):  # a common wrapping of a bare state dict
        kind, tensors = "torchvision", state["state_dict"]
    else:
        kind, tensors = "torchvision", state
    odd = [k for k, v in tensors.items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if odd or not tensors:
        keys = ", ".join(map(str, list(tensors)[:4])) + (", ..." if len(tensors) > 4 else "")
        raise ValueError(
            f"{path} is not a state dict ({f'{odd[0]!r} is not a tensor' if odd else 'no tensors'};"
            f" its keys: {keys or 'none'}): resbench reads a torchvision state dict, "
            '{"state_dict": ...} or a trainer checkpoint {"model": ..., "config": ...}'
        )
    head, conv = tensors.get(_HEAD), next((tensors[k] for k in _FIRST_CONV if k in tensors), None)
    model = config.get("model")
    return Weights(
        path=str(path),
        kind=kind,
        state=tensors,
        model=model if isinstance(model, str) else None,
        num_classes=_count(record.get("num_classes"), head, 0),
        in_channels=_count(record.get("in_channels"), conv, 1),
        data=record or None,
    )


def _count(recorded, tensor: torch.Tensor | None, dim: int) -> int | None:
    """The record's number where it has one, else the tensor's size along ``dim``."""
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        return recorded
    return int(tensor.shape[dim]) if tensor is not None and tensor.dim() > dim else None


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _mismatch(ours: dict, theirs: dict, name: str) -> str | None:
    """What keeps ``theirs`` (a file's tensors) from loading strictly into ``ours``, in a phrase."""
    missing = [k for k in ours if k not in theirs]
    unknown = [k for k in theirs if k not in ours]
    shapes = [k for k in ours if k in theirs and ours[k].shape != theirs[k].shape]
    why = []  # other names: another architecture, whose shapes say nothing more
    if missing:
        why.append(f"the file lacks {len(missing)} of {name}'s tensors, e.g. {missing[0]}")
    if unknown:
        why.append(f"{name} has no place for {len(unknown)} of the file's, e.g. {unknown[0]}")
    if shapes and not why:  # the same names: other classes, input channels or widths
        k = shapes[0]
        more = f", and {len(shapes) - 1} more differ" if len(shapes) > 1 else ""
        why.append(f"{k} is {_shape(theirs[k])} in the file, {_shape(ours[k])} in {name}{more}")
    return "; ".join(why) or None


def check(w: Weights, models: Iterable[str]) -> None:
    """A ValueError of one line naming the models ``w`` does not fit, and those it fits."""
    models = list(dict.fromkeys(models))
    why = {m: w.fits(m) for m in models}
    unfit = [m for m in models if why[m] is not None]
    if not unfit:
        return
    fit = [m for m in models if why[m] is None]
    first = unfit[0]
    reason = why[first] if len(unfit) == 1 else f"{first}: {why[first]}"
    if fit:
        raise ValueError(
            f"{w.path} fits {', '.join(fit)} but not {', '.join(unfit)} ({reason}); "
            "sweep them apart"
        )
    raise ValueError(f"{w.path} does not fit {', '.join(unfit)} ({reason}); {_belongs(w)}")


def _belongs(w: Weights) -> str:
    """Which registry models the file does fit, in words."""
    if w.model is not None and w.model not in list_models():
        return f"{w.model} is not a registry model"
    fitting = [m for m in ([w.model] if w.model else list_models()) if w.fits(m) is None]
    return f"it fits {', '.join(fitting)}" if fitting else "it fits no model of the registry"


def load_into(model: nn.Module, w: Weights) -> nn.Module:
    """Copy ``w``'s tensors into ``model`` (strict: every tensor, every shape); returns ``model``.
    A ValueError of one line when they do not fit it."""
    why = _mismatch(model.state_dict(), w.state, type(model).__name__)
    if why is not None:
        raise ValueError(f"{w.path} does not fit this model: {why}")
    model.load_state_dict(w.state, strict=True)
    return model
