"""Query API tests: fixtures from tests/control_kit.py."""

from control_kit import api, orchestrator, platform, responder, router  # noqa: F401
