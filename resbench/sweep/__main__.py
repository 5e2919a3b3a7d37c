"""``python -m resbench.sweep``."""

from __future__ import annotations

from resbench.sweep.runner import main

raise SystemExit(main())
