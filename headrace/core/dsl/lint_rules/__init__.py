"""The lint rules (``HR2xx``), one module per subject; importing this registers them all.

A rule is a function ``check(ctx) -> Iterable[(path, message)]`` registered
with :func:`headrace.core.dsl.registry.rule`, which gives it an id, a name, a
severity and a one-line doc. Validation rules (``HR1xx``, errors that block a
deploy) live in :mod:`headrace.core.dsl.validate`.
"""

from headrace.core.dsl.lint_rules import data, flow, tasks, timing

__all__ = ["data", "flow", "tasks", "timing"]
