"""``python -m resbench.profile``."""

from __future__ import annotations

from resbench.profile.runner import main

raise SystemExit(main())
