"""``python -m resbench.data``."""

from __future__ import annotations

from resbench.data.cli import main

raise SystemExit(main())
