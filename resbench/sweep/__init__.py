"""`python -m resbench.sweep`: a grid of Configs -> a run folder of Results, tables and plots.

Modules: ``grid`` (presets, flags, the Configs a run measures), ``eta`` (the estimate and the
progress bar), ``isolate`` (the worker process), ``forks`` (the passes over the grid, one fresh
worker each, and their combined Results), ``maxbatch`` (the largest batch that fits), ``runner``
(``main``).

The names below are imported on first use (PEP 562): a spawned worker imports
``resbench.sweep.isolate``, and with it this package, so an eager import here would load the
runner, the report and their libraries into every fork's fresh process, ~1.3 s on a 2-core EPYC
(``python -c "import resbench.sweep.isolate"``: 4.1 s before, 2.5 s after).
"""

from __future__ import annotations

import importlib

# each public name -> the module that defines it
_HOMES = {
    "Progress": "eta",
    "estimate_s": "eta",
    "run_passes": "forks",
    "summary_line": "forks",
    "PRESETS": "grid",
    "build_grid": "grid",
    "expand": "grid",
    "find_max_batch": "maxbatch",
    "max_batch_searches": "maxbatch",
    "EXIT_ERRORS": "runner",
    "EXIT_INCOMPLETE": "runner",
    "EXIT_INTERRUPTED": "runner",
    "build_parser": "runner",
    "main": "runner",
}

__all__ = sorted(_HOMES)


# its modules, which ``resbench.sweep.<module>`` reaches once imported (as an eager package's do)
_MODULES = ("eta", "flags", "forks", "grid", "isolate", "maxbatch", "ranks", "runner", "serving")


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES, *_MODULES])
