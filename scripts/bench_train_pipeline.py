"""Does the device-resident data pipeline keep up? Epoch time against steps x the bare train step.

    python scripts/bench_train_pipeline.py --device cpu --out results/train-pipeline-cpu.json

On a generated full-size CIFAR-10 stand-in (50,000 training images, written in the official format):
1. the train step of the same model and batch, measured by ``measure()`` (before and after, to bracket
   drift on a shared machine);
2. one epoch with ``--data-loader device`` (the trainer's timed region);
3. one epoch with ``--data-loader torchvision`` (DataLoader + per-image transforms), the baseline;
4. one epoch of the device pipeline alone (no model), its direct cost.
Target: device epoch <= 1.05 x steps x step time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from resbench import data, train
from resbench.engine.measure import Config, measure
from resbench.engine.timing import synchronize
from resbench.env import collect_env


def epoch_seconds(data_dir: Path, out: Path, args, loader: str) -> float:
    argv = ["--data-dir", str(data_dir), "--no-verify", "--device", args.device, "--model", args.model,
            "--batch-size", str(args.batch_size), "--epochs", "1", "--data-loader", loader,
            "--workers", str(args.workers), "--out", str(out), "--no-progress"]  # fmt: skip
    if train.main(argv) != 0:
        raise SystemExit(f"training with {loader} failed")
    return json.loads((out / "train.jsonl").read_text().splitlines()[0])["train_s"]


def loader_epoch_seconds(data_dir: Path, args) -> float:
    """One epoch of the device pipeline alone (gather, crop, flip, normalise), no model."""
    cifar = data.load("cifar10", data_dir, check=False).to(args.device)
    loader = data.DeviceLoader(cifar.train_x, cifar.train_y, args.batch_size,
                               torch.Generator().manual_seed(0), mean=cifar.mean, std=cifar.std)  # fmt: skip
    device = torch.device(args.device)
    synchronize(device)
    start = time.perf_counter()
    for x, _ in loader:
        x.sum()  # touch the batch as a model would
    synchronize(device)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="small_resnet18")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-torchvision", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    config = Config(args.model, args.batch_size, device=args.device, mode="train")
    if args.device == "cpu":
        torch.set_flush_denormal(
            True
        )  # as the trainer does on CPUs, so both steps do the same math
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        data.make_synthetic(root / "data", n_train=args.images, n_test=10_000)
        data.load(
            "cifar10", root / "data", check=False
        )  # decode and cache once, outside every timing
        step_ms = [measure(config, budget_s=3.0, peak=False).latency_ms_median]
        device_s = epoch_seconds(root / "data", root / "device", args, "device")
        tv_s = (
            None
            if args.skip_torchvision
            else epoch_seconds(root / "data", root / "tv", args, "torchvision")
        )
        step_ms.append(measure(config, budget_s=3.0, peak=False).latency_ms_median)
        loader_s = loader_epoch_seconds(root / "data", args)
    steps = args.images // args.batch_size
    ideal_s = steps * statistics.mean(step_ms) / 1e3
    result = {
        "config": f"{args.model} batch {args.batch_size} train on {args.device}, {args.images} images",
        "step_ms_before_after": step_ms,
        "steps": steps,
        "steps_x_step_s": ideal_s,
        "device_epoch_s": device_s,
        "device_over_ideal": device_s / ideal_s,
        "loader_alone_epoch_s": loader_s,
        "loader_share_of_device_epoch": loader_s / device_s,
        "torchvision_epoch_s": tv_s,
        "torchvision_over_device": tv_s / device_s if tv_s else None,
        "workers": args.workers,
        "env": {k: collect_env()[k] for k in ("torch", "cpu", "gpu_names", "torch_threads")},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
