"""`python -m resbench.profile`: torch.profiler over one Config -> trace, operator and stage tables.

Modules: ``tables`` (a ``Profile`` and its ops.md, stages.md and stages.png), ``runner`` (profiling
one Config, ``main``).
"""

from __future__ import annotations

from resbench.profile.runner import (
    BACKWARD_PREFIX,
    CATEGORIES,
    STAGE_PREFIX,
    StageMarks,
    category,
    flops_on_working_rows,
    kernel_time_us,
    main,
    median_step,
    ops_frame,
    run_profile,
    stages_frame,
    trace_events,
)
from resbench.profile.tables import Profile, stages_markdown, write_tables

__all__ = [
    "BACKWARD_PREFIX",
    "CATEGORIES",
    "STAGE_PREFIX",
    "Profile",
    "StageMarks",
    "category",
    "flops_on_working_rows",
    "kernel_time_us",
    "main",
    "median_step",
    "ops_frame",
    "run_profile",
    "stages_frame",
    "stages_markdown",
    "trace_events",
    "write_tables",
]
