"""``headrace serve api``: the indexer thread plus the HTTP server, as one process.

Start: open (or create) the query database under the data dir, start the
indexer from its stored offsets, serve HTTP. SIGTERM/SIGINT: aiohttp stops
accepting requests and finishes those in flight, then the indexer stops after
its current batch (whose views and offsets are written together) and the
database is closed. A ``kill -9`` loses at most the batch in flight, which
is read again on restart.
"""

from __future__ import annotations

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


def data_path(settings: Settings, instance: str) -> Path:
    """The API instance's database folder: ``<data_dir>/api-<instance>``."""
    base = settings.data_dir or (settings.home / "data")
    return Path(base) / f"api-{instance}"


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
        indexer.stop()
        store.close()

    app.on_cleanup.append(stop_indexer)
    bind_host, bind_port = host or config.host, port or config.port
    log.info("api listening on http://%s:%d", bind_host, bind_port)
    web.run_app(app, host=bind_host, port=bind_port, print=None, access_log=None)
    log.info("api stopped")
