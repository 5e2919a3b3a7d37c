"""`python -m resbench.train`: a CIFAR-family ResNet trained to accuracy against wall time.

Modules: ``recipe`` (the recipe and its flags, checkpoints, the log, the summary and plot),
``runner`` (the training loop, DDP, ``main``).
"""

from __future__ import annotations

from resbench.train.recipe import (
    CHECKPOINT,
    LOG_COLUMNS,
    LOG_FILE,
    RUN_FILES,
    RunState,
    TrainConfig,
    build_parser,
    config_from_args,
)
from resbench.train.runner import NonFiniteLoss, main, train_run

__all__ = [
    "CHECKPOINT",
    "LOG_COLUMNS",
    "LOG_FILE",
    "RUN_FILES",
    "NonFiniteLoss",
    "RunState",
    "TrainConfig",
    "build_parser",
    "config_from_args",
    "main",
    "train_run",
]
