"""`python -m resbench.train`: a CIFAR-family ResNet trained to accuracy against wall time.

Modules: ``recipe`` (the recipe, checkpoints, the log, the summary and plot), ``flags`` (the command
line, its bounds and exit codes), ``folder`` (resume, overwrite, stopping), ``runner`` (the training
loop, DDP, ``main``).
"""

from __future__ import annotations

from resbench.train.flags import EXIT_DIVERGED, EXIT_INTERRUPTED, build_parser, config_from_args
from resbench.train.recipe import (
    CHECKPOINT,
    LOG_COLUMNS,
    LOG_FILE,
    RUN_FILES,
    RunState,
    TrainConfig,
)
from resbench.train.runner import NonFiniteLoss, main, train_run

__all__ = [
    "CHECKPOINT",
    "EXIT_DIVERGED",
    "EXIT_INTERRUPTED",
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
