"""`python -m resbench.layerstats`: why residuals work, measured on a network and its twin.

Modules: ``runner`` (the statistics, the depth comparison, ``main``), ``plots`` (both variants on
the same axes, feature maps).
"""

from __future__ import annotations

from resbench.layerstats.runner import (
    VARIANTS,
    BlockStats,
    GradStats,
    analyse,
    briefly_train,
    collect,
    first_last_ratio,
    is_entry,
    main,
    make_batch,
    wide_table,
)

__all__ = ["VARIANTS", "BlockStats", "GradStats", "analyse", "briefly_train", "collect",
           "first_last_ratio", "is_entry", "main", "make_batch", "wide_table"]  # fmt: skip
