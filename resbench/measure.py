"""Where users import the measurement from: ``from resbench.measure import Config, measure``.

The measurement engine lives in ``resbench/engine/`` (``resbench/engine/measure.py`` is this
module's home); this module hands its public names on, so that scripts and notebooks written
against ``resbench.measure`` keep working. Code inside this project imports the engine directly.
"""

from resbench.engine.measure import (
    MIN_WARMUP_CAP_S,
    SLOWDOWN_ENV,
    TRAIN_LR,
    Config,
    NonFiniteOutput,
    PeakMemory,
    Prepared,
    Result,
    Weights,
    check_faithful,
    device_name,
    free_memory,
    is_oom,
    load_runtime,
    measure,
    missing_package,
    prepare,
    read_weights,
    slowed,
    steady_allocator,
    unfaithful,
    utc_now,
    validate_config,
)

__all__ = [
    "MIN_WARMUP_CAP_S",
    "SLOWDOWN_ENV",
    "TRAIN_LR",
    "Config",
    "NonFiniteOutput",
    "PeakMemory",
    "Prepared",
    "Result",
    "Weights",
    "check_faithful",
    "device_name",
    "free_memory",
    "is_oom",
    "load_runtime",
    "measure",
    "missing_package",
    "prepare",
    "read_weights",
    "slowed",
    "steady_allocator",
    "unfaithful",
    "utc_now",
    "validate_config",
]
