"""``headrace serve <service>``: run one headrace service in the foreground.

Each service is its own process (and consumer group); run several workers of
one service on a host with distinct ``--instance`` values (data directory) and
``--web-port`` values (metrics). SIGTERM drains and stops it cleanly.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Run one headrace service in the foreground (SIGTERM drains it).")

InstanceOpt = Annotated[
    str,
    typer.Option("--instance", help="worker name; separates data dirs of workers on one host"),
]
