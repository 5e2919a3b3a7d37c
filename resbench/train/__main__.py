"""``python -m resbench.train``."""

from __future__ import annotations

from resbench.train.runner import main

raise SystemExit(main())
