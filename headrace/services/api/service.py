"""``headrace serve api``: the indexer thread plus the HTTP server, as one process.

Start: open (or create) the query database under the data dir, start the
indexer from its stored offsets, serve HTTP. SIGTERM/SIGINT: aiohttp stops
accepting requests and finishes those in flight, then the indexer stops after
its current batch (whose views and offsets are written together), and once
neither it nor a request's read uses the database any more, the database is
closed (left open, with an error logged, if one is still running after 30 s).
A ``kill -9`` loses at most the batch in flight, which is read again on
restart.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from headrace.logs import configure
from headrace.services.api.config import ApiSettings
from headrace.services.api.indexer import Indexer
from headrace.services.api.store import ViewStore
from headrace.services.api.web import Api
from headrace.settings import Settings

log = logging.getLogger("headrace.api")

STOP_TIMEOUT = 30.0  # seconds the indexer and running reads get to finish at shutdown


def data_path(settings: Settings, instance: str) -> Path:
    """The API instance's database folder: ``<data_dir>/api-<instance>``."""
    base = settings.data_dir or (settings.home / "data")
    return Path(base) / f"api-{instance}"


def release(api: Api, indexer: Indexer, store: ViewStore, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the indexer and the requests' reads, then close the store — unless one of them
    still runs after ``timeout`` s: closing a RocksDB under a thread that uses it crashes
    the process, while left open it is as safe as after a kill -9 (the WAL has every
    write). True when the store was closed."""
    reads_done = api.close_reads(timeout)
    stopped = indexer.stop(timeout)
    if reads_done and stopped:
        store.close()
        return True
    still = "the indexer" if not stopped else "a request's read"
    log.error("the query database is left open: %s still runs after %.0f s", still, timeout)
    return False


def run_api(
    settings: Settings,
    *,
    instance: str = "0",
    host: str | None = None,
    port: int | None = None,
    config: ApiSettings | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT."""
    config = config or ApiSettings()
    configure(settings.log_level, settings.log_format, service="api")
    store = ViewStore(data_path(settings, instance), settings.topics.events)
    indexer = Indexer(settings, store, batch_size=config.batch).start()
    api = Api(settings, store, indexer, config.wait_max)
    app = api.app()

    async def stop_indexer(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, release, api, indexer, store)

    app.on_cleanup.append(stop_indexer)
    bind_host, bind_port = host or config.host, port or config.port
    log.info("api listening on http://%s:%d", bind_host, bind_port)
    web.run_app(app, host=bind_host, port=bind_port, print=None, access_log=None)
    log.info("api stopped")
