"""The sweep under torchrun: each rank measures its slice of the grid, on its own device.

A rank's Configs are timed as if it had the machine to itself, which holds for GPU ranks (one GPU
each) but not for CPU ones: ranks on one host share its cores, so each is measured under the
others' load. That is warned about (one line) and recorded in env.json (``shared_cores``), which
summary.md shows as a warning; it is not refused, since the ranks do run as asked (the merged
folder, the forks) and a user may mean it. The trainer's DDP is another matter: it reports accuracy
against time for the job as a whole, not one rank's timing.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable


def setup() -> tuple[int, int, int]:
    """(rank, world, local_rank) under torchrun, with a gloo group for coordination; else (0, 1, 0)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    # gloo only coordinates (barrier, broadcast of the run folder); no tensors cross ranks
    dist.init_process_group("gloo", timeout=_dt.timedelta(hours=48))
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(device: str, local_rank: int, world: int) -> str:
    if world > 1 and device == "cuda":
        return f"cuda:{local_rank}"
    return device


def _cores() -> int:
    """The cores this process may run on (its affinity), as the scenarios count them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def shared_cores(devices: Iterable[str], world: int) -> dict | None:
    """What env.json records when several ranks on this host time CPU Configs: the ranks, the
    cores they share and the sentence that says so; None when no rank shares its CPU with another
    (one rank a host, or no CPU Configs). ``devices``: every device of the whole grid."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if local <= 1 or not any(d == "cpu" for d in devices):
        return None
    cores = _cores()
    return {
        "ranks": local,
        "cores": cores,
        "warning": f"each rank is measured under the others' load: {local} torchrun ranks share "
        f"{cores} cores on this host, so CPU timings are slower and noisier than one process's "
        "(run one process for CPU timings)",
    }
