"""The view tests drive real runs with the decider's test kit and strategies."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "decider"))
