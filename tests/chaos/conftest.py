"""The chaos CI subset starts its own engines and takes minutes: it runs from `make chaos`
(OPSMANTIK_CHAOS=1), not inside every `pytest tests/`. The checker's unit tests always run."""

from __future__ import annotations

import os

NEEDS_PRIVATE_STACK = ["test_chaos_ci.py"]
collect_ignore = [] if os.environ.get("OPSMANTIK_CHAOS") == "1" else NEEDS_PRIVATE_STACK
