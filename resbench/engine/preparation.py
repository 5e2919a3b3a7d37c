"""A model prepared to run one Config: built, placed, wrapped in its backend, with the one call
that is timed (``prepare``, ``Prepared``), and the checks that its label is true.

``measure`` times what this prepares; the pytest benchmarks and the profiler prepare through it too,
and its train step (``backends.TrainStep``) is the trainer's. A setting whose arithmetic is not what
its label says raises ``backends.Unfaithful`` before anything is timed.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from resbench import env, settings
from resbench.datamodel import Config, validate_config
from resbench.engine import backends, evaluate
from resbench.engine.devices import emulated, intra_op_threads, steady_allocator, torch_precision
from resbench.models import build_model, input_channels
from resbench.settings import numerics
from resbench.weights import Weights, load_into
from resbench.weights import read as read_weights

# the update's size does not change the work; a small one keeps random-label steps finite
TRAIN_LR = 1e-3


class NonFiniteOutput(RuntimeError):
    """A step's output holds a NaN or Inf (an "error" row that says so)."""


def unfaithful(device: torch.device, config: Config) -> tuple[str, str] | None:
    """(why, what would run) where this Config's label would be false before anything is built:
    a runtime that lacks the precision here, or PyTorch without units for it; else None."""
    lacks = settings.BACKENDS[config.backend].lacks
    if lacks is not None:
        why = lacks(config.precision)
        return (why, "fp32") if why else None
    why = emulated(device, config.precision)
    return (why, f"{config.precision}-emulated") if why else None


def check_faithful(config: Config, effective: str | None, allow_emulated: bool) -> None:
    """Refuse (backends.Unfaithful) a row whose arithmetic is not what its label says: another
    precision, or an emulated one unless ``allow_emulated``."""
    if effective is None or effective == config.precision:
        return
    if effective == f"{config.precision}-emulated":
        if not allow_emulated:
            raise backends.Unfaithful(
                f"precision {config.precision} is only emulated on this device "
                "(--allow-emulated measures it anyway)",
                effective,
            )
        return
    raise backends.Unfaithful(
        f"the {config.backend} backend computed {effective}, not {config.precision}, on this "
        f"device: a row labelled {config.precision} would be false",
        effective,
    )


NOISE = "N(0,1)"  # agreement_inputs of the row's own random inputs (no labelled images given)


@dataclass
class Prepared:
    """A model ready to run one Config: ``step()`` runs one timed iteration."""

    config: Config
    device: torch.device
    model: torch.nn.Module  # the eager module (whatever runs it, it owns the parameters)
    inputs: torch.Tensor
    labels: torch.Tensor
    step: Callable[[], object]
    prepare_s: float = 0.0  # the backend's preparation: export, compilation, quantisation
    optimizer: torch.optim.Optimizer | None = None
    reference: torch.Tensor | None = None  # fp32 eager logits on the same inputs (agreement)
    notes: dict = field(default_factory=dict)  # what the backend recorded (calibration)
    scoring: evaluate.Scoring | None = None  # the labelled images this row is scored on
    workdir: Path | None = None  # the backend's files (model.onnx, ...), gone when prepare() exits
    # one call per stream (config.streams), each for its own thread (resbench/engine/serve.py); the
    # first is ``step``
    streams: list[Callable[[], object]] = field(default_factory=list)
    # a deployment runtime's own object: OpenVINO's compiled model, ONNX Runtime's sessions
    runtime: object = None
    # PyTorch's arithmetic on the CPU: output() reads the kernels its call ran off oneDNN's log
    reads_kernels: bool = False

    def output(self) -> torch.Tensor:
        """One more step's output (the logits; the loss in train) as a CPU tensor, refused with
        NonFiniteOutput if it holds a NaN or Inf: such a row's figures would mean nothing. On a
        PyTorch CPU row this call, outside every timed figure, is also the one whose oneDNN log
        says which kernels the row ran (``env.kernels_of``: compute_kernel, kernels, reorders)."""
        if self.reads_kernels:
            raw, lines = env.onednn_log(self.step)
            self.notes |= env.kernels_of(lines)
        else:
            raw = self.step()
        out = backends.as_tensor(raw)
        bad = out.numel() - int(torch.isfinite(out).sum())
        if bad:
            what = "loss" if self.config.mode == "train" else "logits"
            raise NonFiniteOutput(
                f"the {what} hold {int(torch.isnan(out).sum())} NaN and "
                f"{int(torch.isinf(out).sum())} Inf of {out.numel()} values (NaN or Inf in the "
                "weights, or an overflow in this precision)"
            )
        return out

    def agreement(self, out: torch.Tensor) -> dict:
        """max_abs_diff and top1_agreement of a step's output against the fp32 eager logits."""
        if self.reference is None:
            return {}
        ref = self.reference
        return {
            "max_abs_diff": float((out - ref).abs().max()),
            "top1_agreement": float((out.argmax(1) == ref.argmax(1)).float().mean()),
            "agreement_inputs": NOISE,
        }


@contextlib.contextmanager
def prepare(
    config: Config,
    seed: int = 0,
    *,
    reference: bool = False,
    weights: str | Weights | None = None,
    allow_emulated: bool = False,
    evaluation: evaluate.Spec | None = None,
) -> Iterator[Prepared]:
    """Build and place the model for ``config`` and wrap it in its backend; restore global flags after.

    The same preparation serves measure(), the pytest benchmarks and the profiler; its train step
    (``backends.TrainStep``) is the trainer's too. ``reference`` also keeps fp32 eager logits of
    the same inputs, for the agreement; with ``weights`` (a path, read here, or a read
    ``weights.Weights``) the model is built with the file's classes and input channels and loaded
    strictly, instead of He-initialised. A setting whose arithmetic is not what its label
    says raises ``backends.Unfaithful`` (an emulated precision only without ``allow_emulated``);
    ``notes`` records ``effective_precision`` and ``compute_kernel``. PyTorch runs
    ``config.threads`` intra-op threads inside (restored after), and the backend makes one call per
    ``config.streams``. With ``evaluation`` (labelled images) the Prepared carries their
    ``scoring``, and int8 calibrates on the Config's ``calibration_data`` from them.
    """
    device = validate_config(config)
    steady_allocator()
    with (
        numerics(config.precision, device),
        intra_op_threads(config.threads),
        tempfile.TemporaryDirectory() as workdir,
    ):
        torch.manual_seed(seed)
        if weights is not None and not isinstance(weights, Weights):
            weights = read_weights(weights)
        model = build_model(config.model, **(weights.overrides() if weights else {}))
        if weights is not None:
            load_into(model, weights)
        model = model.to(device)
        size, channels = config.image_size, input_channels(model)
        inputs = torch.randn(config.batch_size, channels, size, size, device=device)
        scoring = None
        if evaluation is not None and config.mode == "inference":
            scoring = evaluate.Scoring(evaluation, size, channels)
        labels = torch.randint(0, model.fc.out_features, (config.batch_size,), device=device)
        model.train(config.mode == "train")
        ref = None
        if reference and config.mode == "inference":
            with torch.inference_mode():
                ref = backends.as_tensor(model(inputs))
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        target = backends.Target(
            model, inputs, labels, device, config.mode, settings.PRECISIONS[config.precision].autocast,
            config.precision, config.compile, Path(workdir), TRAIN_LR, streams=config.streams,
            threads=config.threads, freezing=config.frozen,
        )  # fmt: skip
        if scoring is not None and settings.PRECISIONS[config.precision].quantised:
            target.calibration = scoring.calibration(
                config.calibration_data, evaluation.calibration_method, config.batch_size
            )
        steps, prepare_s = settings.BACKENDS[config.backend].wrap_for(config.precision)(target)
        optimizer = target.notes.pop("optimizer", None)
        pytorch_cpu = False
        if "effective_precision" not in target.notes:  # PyTorch's own arithmetic
            target.notes["effective_precision"] = torch_precision(device, config.precision)
            target.notes["compute_kernel"] = None  # read off the row's own call (output())
            pytorch_cpu = device.type == "cpu"
        check_faithful(config, target.notes["effective_precision"], allow_emulated)
        yield Prepared(
            config, device, model, inputs, labels, steps[0], prepare_s, optimizer, ref,
            target.notes, scoring, Path(workdir), steps, target.runtime, pytorch_cpu,
        )  # fmt: skip


def load_runtime(config: Config, device: torch.device) -> None:
    """Load the Config's backend runtime once per process (``backends.load_runtime``); call it
    before a row's memory baseline and first call."""
    entry = settings.BACKENDS[config.backend]
    with numerics(config.precision, device):
        autocast = settings.PRECISIONS[config.precision].autocast
        wrap = entry.warm or entry.wrap
        backends.load_runtime(wrap, device, config.mode, config.precision, autocast, config.compile)
