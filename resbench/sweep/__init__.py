"""`python -m resbench.sweep`: a grid of Configs -> a run folder of Results, tables and plots.

Modules: ``grid`` (presets, flags, the Configs a run measures), ``eta`` (the estimate and the
progress bar), ``isolate`` (the worker process), ``forks`` (the passes over the grid, one fresh
worker each, and their combined Results), ``maxbatch`` (the largest batch that fits), ``runner``
(``main``).
"""

from __future__ import annotations

from resbench.sweep.eta import Progress, estimate_s
from resbench.sweep.forks import run_passes, summary_line
from resbench.sweep.grid import PRESETS, build_grid, expand
from resbench.sweep.maxbatch import find_max_batch, max_batch_searches
from resbench.sweep.runner import (
    EXIT_ERRORS,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    build_parser,
    main,
)

__all__ = [
    "EXIT_ERRORS",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "PRESETS",
    "Progress",
    "build_grid",
    "build_parser",
    "estimate_s",
    "expand",
    "find_max_batch",
    "main",
    "max_batch_searches",
    "run_passes",
    "summary_line",
]
