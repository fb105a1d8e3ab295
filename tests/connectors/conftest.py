"""Fixtures for connector tests (the worker SDK's kit plays the task service)."""

from __future__ import annotations

import sys
from pathlib import Path

# The SDK tests' kit (dispatches in, results out) serves the connector tests too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sdk"))
