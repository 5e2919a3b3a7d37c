"""``python -m resbench.layerstats``."""

from __future__ import annotations

from resbench.layerstats.runner import main

raise SystemExit(main())
