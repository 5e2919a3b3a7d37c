"""A prepared call scored on labelled images: top-1/top-5, the drop against fp32 eager, the flips.

The sweep's ``--eval-data`` names the images (``resbench.data`` reads them). Each inference row is
scored after its timed region through its own prepared call: the same session, compiled graph or
int8 model, at the Config's batch size, each batch copied into the very input tensor the call reads.
The last partial batch is filled up with the split's first images, whose outputs are dropped.

The reference is fp32 eager PyTorch with the same weights, on the same images, at the same batch
size (so the fp32 eager row's own drop is exactly 0, and every other row at that batch size is
compared with it); it is computed once per process for each (model, weights, size, batch).

Per row: ``top1_accuracy`` and ``top5_accuracy`` (fractions), ``accuracy_drop`` (points),
``flips_lost`` (right in fp32, wrong here) and ``flips_gained`` (the reverse), ``accuracy_drop_p``
(the exact McNemar test on the flips, scipy's binomial test) and ``accuracy_drop_ci`` (a 95%
interval of the paired difference), ``kl_divergence`` and ``logit_rel_error`` against the fp32
logits (they compare across models, where max_abs_diff does not), and ``eval_s``.

int8's calibration images come from here too (``calibration``): the training split, or the images
of a test-only folder that are not in the eval subset, never an evaluated image.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch

from resbench import data
from resbench.engine import backends
from resbench.models import build_model
from resbench.settings import numerics

EVAL_SEED = 0  # the eval subset (--eval-images) and the calibration images are drawn from it
CALIBRATION_IMAGES = 300  # a few hundred, as onnxruntime's, NNCF's and TensorRT's examples use
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


@dataclass(frozen=True)
class Spec:
    """What to score on, as plain data: it crosses to the sweep's worker processes."""

    path: str
    dataset: str  # a data.DATASETS name: detected, or a trainer checkpoint's
    images: int | None = None  # a seeded subset of the test split; None: all of it
    seed: int = EVAL_SEED
    calibration_images: int = CALIBRATION_IMAGES
    calibration_method: str = "minmax"
    preprocess: dict | None = None  # a trainer checkpoint's recorded rule; None: data's rule

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache
def dataset(path: str, name: str, size: int) -> data.Labelled:
    """The labelled images, read once per process (an ImageFolder decodes at ``size``)."""
    if name == "imagefolder":
        return data.load(name, path, size=size)
    return data.load(name, path)


def choose(total: int, count: int | None, seed: int = EVAL_SEED) -> torch.Tensor:
    """``count`` indices of ``total`` drawn without replacement from ``seed``, ascending; all of
    them when count is None or not smaller."""
    if count is None or count >= total:
        return torch.arange(total)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=gen)[:count].sort().values


class Scoring:
    """One model input's view of a Spec: the chosen images, their labels, the preprocessing."""

    def __init__(self, spec: Spec, size: int, channels: int) -> None:
        self.spec = spec
        self.data = dataset(spec.path, spec.dataset, size)
        if spec.preprocess is not None:
            self.preprocess = data.Preprocess.from_dict(spec.preprocess)
        else:
            self.preprocess = self.data.preprocess(size, channels)
        if (self.preprocess.size, self.preprocess.channels) != (size, channels):
            raise data.DataError(
                f"the weights' recorded preprocessing makes {self.preprocess.channels}x"
                f"{self.preprocess.size}x{self.preprocess.size} inputs; this Config takes "
                f"{channels}x{size}x{size}"
            )
        self.indices = choose(self.data.count("test"), spec.images, spec.seed)
        self.labels = self.data.labels("test")[self.indices]

    def batches(self, batch: int) -> Iterator[tuple[torch.Tensor, int]]:
        """(model inputs of exactly ``batch`` images, how many of them are real), in order."""
        n = len(self.indices)
        for start in range(0, n, batch):
            idx = self.indices[start : start + batch]
            real = len(idx)
            if real < batch:  # fill the last batch up: a fixed-shape graph takes only whole ones
                idx = torch.cat([idx, self.indices[: batch - real].repeat(batch)[: batch - real]])
            images, _ = self.data.take("test", idx)
            yield self.preprocess.apply(images), real

    def calibration(
        self, source: str | None, method: str, batch: int = 1
    ) -> backends.Calibration | None:
        """int8's calibration images for ``source`` ("train", a folder's path; "noise" or None:
        None, so the backend generates N(0,1) images), none of them an evaluated image: the
        Spec's count rounded up to whole batches of ``batch`` (a fixed-shape export takes only
        whole ones), as far as there are images."""
        if source in (None, "noise"):
            return None
        if source == "train":
            ds, rule = self.data, self.preprocess
        else:
            ds = dataset(source, data.detect(source), self.preprocess.size)
            rule = ds.preprocess(self.preprocess.size, self.preprocess.channels)
        split = "train" if "train" in ds.splits() else "test"
        pool = torch.arange(ds.count(split))
        said = f"{ds.name} {split} images"
        if ds is self.data and split == "test":  # a test-only folder: what the eval leaves out
            pool = pool[~torch.isin(pool, self.indices)]
            said += " outside the eval subset"
            if len(pool) == 0:
                raise data.DataError(
                    f"{ds.path} has no images outside the {len(self.indices)} evaluated ones to "
                    "calibrate int8 on; lower --eval-images or pass --calibration-data"
                )
        count = -(-self.spec.calibration_images // batch) * batch
        pick = pool[choose(len(pool), count, self.spec.seed + 1)]
        images, _ = ds.take(split, pick)
        seed = f"seed {self.spec.seed + 1}"
        return backends.Calibration(
            rule.apply(images).cpu(), f"{len(pick)} {said} of {ds.path} ({seed})", method
        )


def logits(call: Callable[[], object], feed: torch.Tensor, scoring: Scoring) -> torch.Tensor:
    """The logits of every chosen image through ``call``, each batch copied into ``feed`` (the
    tensor the call reads) first."""
    outs = []
    for x, real in scoring.batches(feed.shape[0]):
        feed.copy_(x)
        outs.append(backends.as_tensor(call())[:real])
    return torch.cat(outs)


_REFERENCES: dict[tuple, torch.Tensor] = {}


def reference(key: tuple, model: torch.nn.Module, feed: torch.Tensor, scoring: Scoring):
    """fp32 eager logits of the chosen images at ``feed``'s batch size, once per ``key``."""
    if key not in _REFERENCES:
        with torch.inference_mode(), numerics("fp32", feed.device):
            x = torch.empty_like(feed, memory_format=torch.contiguous_format)
            _REFERENCES[key] = logits(lambda: model(x), x, scoring)
    return _REFERENCES[key]


def mcnemar_p(lost: int, gained: int) -> float:
    """The exact McNemar test: two-sided binomial p of the flips (1.0 with none)."""
    from scipy.stats import binomtest

    n = lost + gained
    return 1.0 if n == 0 else float(binomtest(lost, n, 0.5).pvalue)


def top1_credit(out: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(each image's top-1 credit, whether its top logit was tied). A unique top class is right
    (1) or wrong (0); a top logit tied between k classes (bf16 logits tie often: 48 of 10,000
    Fashion-MNIST images) earns 1/k if the label is among them, as a random pick would on average.
    ``argmax`` gives the tie to the lowest class index, which made bf16 look 0.28 points more
    accurate than fp32 on a checkpoint whose confusable classes sit below the one it overpredicts."""
    top = out == out.max(1, keepdim=True).values
    count = top.sum(1)
    credit = top.gather(1, labels[:, None]).squeeze(1).double() / count.double()
    return credit, count > 1


def drop_interval(ref_right: torch.Tensor, row_right: torch.Tensor) -> list[float]:
    """A 95% interval of the paired difference in accuracy, in points (normal approximation of
    the per-image differences; [d, d] when no image flipped)."""
    d = ref_right.double() - row_right.double()
    n = len(d)
    mean = float(d.mean())
    half = Z95 * float(d.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
    return [100 * (mean - half), 100 * (mean + half)]


def compare(out: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor) -> dict:
    """Every accuracy field of a row's logits ``out`` against the fp32 logits ``ref``: top-1 with
    tied top logits credited 1/k (``top1_credit``), and the flips and McNemar's test on the images
    whose top-1 is untied in both (a tie is no prediction to flip)."""
    right, tied = top1_credit(out, labels)
    ref_right, ref_tied = top1_credit(ref, labels)
    untied = ~(tied | ref_tied)
    lost = int((untied & (ref_right == 1) & (right == 0)).sum())
    gained = int((untied & (ref_right == 0) & (right == 1)).sum())
    fields = {
        "top1_accuracy": float(right.mean()),
        "top1_ties": int(tied.sum()),
        "accuracy_drop": 100 * float(ref_right.mean() - right.mean()),
        "flips_lost": lost,
        "flips_gained": gained,
        "accuracy_drop_p": mcnemar_p(lost, gained),
        "accuracy_drop_ci": drop_interval(ref_right, right),
        "eval_images": len(labels),
    }
    if out.shape[1] > 5:
        top5 = (out.topk(5, 1).indices == labels[:, None]).any(1)
        fields["top5_accuracy"] = float(top5.float().mean())
    log_p, log_q = ref.double().log_softmax(1), out.double().log_softmax(1)
    fields["kl_divergence"] = float((log_p.exp() * (log_p - log_q)).sum(1).mean())
    fields["logit_rel_error"] = float((out - ref).norm() / ref.norm().clamp_min(1e-30))
    return fields


def score(prepared, scoring: Scoring, key: tuple) -> dict:
    """The accuracy fields of a prepared inference row (``measure.Prepared``), and eval_s;
    ``key`` names its network and batch size (model, weights, size, batch, device)."""
    start = time.perf_counter()
    key = (*key, json.dumps(scoring.spec.to_dict(), sort_keys=True))
    out = logits(prepared.step, prepared.inputs, scoring)
    if prepared.config.is_baseline:  # fp32 eager is its own reference: a drop of exactly 0
        ref = out
        _REFERENCES.setdefault(key, out)
    else:
        ref = reference(key, prepared.model, prepared.inputs, scoring)
    fields = compare(out, ref, scoring.labels)
    if not prepared.config.is_baseline:  # agreement on the real images, not on N(0,1) noise
        fields |= {
            "max_abs_diff": float((out - ref).abs().max()),
            "top1_agreement": float((out.argmax(1) == ref.argmax(1)).float().mean()),
            "agreement_inputs": f"{len(scoring.labels)} images of {scoring.spec.path}",
        }
    return fields | {"eval_data": scoring.spec.path, "eval_s": time.perf_counter() - start}


def plan(
    path: str,
    images: int | None = None,
    weights=None,
    method: str = "minmax",
    calibration_images: int = CALIBRATION_IMAGES,
) -> Spec:
    """The Spec for ``--eval-data path``: its dataset detected (a trainer checkpoint's when the
    files are of its kind, with its recorded preprocessing); a DataError of one line if the
    folder holds no labelled images resbench reads."""
    name = data.detect(path)
    record = getattr(weights, "data", None) or {}
    preprocess = record.get("preprocess")
    trained_on = data.DATASETS.get(record.get("dataset"))
    if trained_on is not None and trained_on.reader is data.DATASETS[name].reader:
        name = record["dataset"]  # idx files are MNIST or Fashion-MNIST: the checkpoint knows
    elif preprocess is not None:
        raise data.DataError(
            f"{path} holds {name}, but the weights were trained on {record.get('dataset')}: "
            "score them on their own dataset"
        )
    return Spec(str(path), name, images, EVAL_SEED, calibration_images, method, preprocess)


def check(spec: Spec, model: str, size: int, overrides: dict | None = None) -> None:
    """Refuse, with a DataError of one line, labelled images this model cannot be scored on: a
    class count that differs from the model's, channels it cannot take, a size its recorded
    preprocessing does not make."""
    with torch.device("meta"):  # shapes only: no weights drawn
        net = build_model(model, **(overrides or {}))
    classes = net.fc.out_features
    channels = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    ds = dataset(spec.path, spec.dataset, size)
    if len(ds.classes) != classes:
        raise data.DataError(
            f"{spec.path} has {len(ds.classes)} classes and {model} {classes}: score a model "
            "with as many classes (trained on this data, e.g. --weights a trainer checkpoint)"
        )
    Scoring(spec, size, channels)  # the channel and size rule, and the subset, checked here
