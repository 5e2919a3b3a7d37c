"""``python -m resbench.report``."""

from __future__ import annotations

from resbench.report.cli import main

raise SystemExit(main())
