"""The worker: take task attempts from ``tasks.<queue>``, run handlers, report on ``task-results``.

::

    worker = Worker(queues=["payments"], concurrency=16)

    @worker.task("charge-card")
    async def charge(input, ctx):
        return await psp.charge(input["amount"], idempotency_key=ctx.idempotency_key)

    worker.run()          # until SIGTERM / SIGINT, then drain

Threads and the loop: each queue has a fetcher thread (its consumer, see
:mod:`.fetcher`); results go out through one producer (:mod:`.results`);
attempts run on an asyncio loop (:mod:`.attempts`) — async handlers on the
loop itself, sync ones in a thread pool of ``concurrency`` threads. The loop
sends ``started`` when it takes an attempt, heartbeats while the handler runs
(every ``heartbeat_fraction`` of the dispatch's heartbeat timeout), then
exactly one ``completed`` or ``failed``; the dispatch's offset is released for
commit when Kafka acknowledges that final report. This module is the
lifecycle: registration, start, drain, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from headrace.errors import ErrorCode, HeadraceError
from headrace.sdk.attempts import Attempts
from headrace.sdk.errors import UNHANDLED_CODE
from headrace.sdk.fetcher import QueueFetcher
from headrace.sdk.handlers import Handlers
from headrace.sdk.results import ResultSender
from headrace.sdk.slots import Slots
from headrace.sdk.web import WebServer
from headrace.settings import Settings, get_settings

log = logging.getLogger("headrace.sdk.worker")

F = TypeVar("F", bound=Callable[..., Any])


class Worker:
    """A pool of task handlers serving one or more queues (see the module docstring).

    ``concurrency`` bounds the attempts running at once across all queues;
    ``prefetch`` (default: ``concurrency``) bounds the dispatches fetched
    ahead per queue. ``unhandled_code``/``unhandled_retryable`` say how an
    exception other than :class:`~headrace.sdk.Retryable` /
    :class:`~headrace.sdk.NonRetryable` is reported. On stop, running
    attempts get ``drain_timeout`` seconds to finish; when a rebalance takes
    partitions away, their running attempts get ``revoke_grace`` seconds (so
    the new owner does not run them again).
    """

    def __init__(
        self,
        queues: Iterable[str] | str,
        *,
        concurrency: int = 16,
        settings: Settings | None = None,
        prefetch: int | None = None,
        heartbeat_fraction: float = 1 / 3,
        unhandled_code: str = UNHANDLED_CODE,
        unhandled_retryable: bool = True,
        drain_timeout: float = 25.0,
        revoke_grace: float = 2.0,
        identity: str | None = None,
        create_topics: bool = True,
        consumer_config: dict[str, Any] | None = None,
    ) -> None:
        self.queues = [queues] if isinstance(queues, str) else list(dict.fromkeys(queues))
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        if not 0 < heartbeat_fraction < 1:
            raise ValueError(f"heartbeat_fraction must be in (0, 1), got {heartbeat_fraction}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self._settings = settings
        self._prefetch = prefetch
        self.heartbeat_fraction = heartbeat_fraction
        self.unhandled_code = unhandled_code
        self.unhandled_retryable = unhandled_retryable
        self.drain_timeout = drain_timeout
        self.revoke_grace = revoke_grace
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}"
        self.create_topics = create_topics
        self.consumer_config = consumer_config
        self.handlers = Handlers()
        self.started = threading.Event()  # fetchers are subscribed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._attempts: Attempts | None = None
        self._fetchers: list[QueueFetcher] = []
        self._sender: ResultSender | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._on_shutdown: list[Callable[[], Awaitable[None]]] = []

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    # -- registration --------------------------------------------------------------

    def task(self, name: str) -> Callable[[F], F]:
        """Register the decorated function as the handler of task ``name``.

        ``name`` is matched against the step's ``config.task`` if set, else the
        step name; ``"*"`` handles whatever else arrives on the worker's queues.
        """

        def register(fn: F) -> F:
            self.handlers.add(name, fn)
            return fn

        return register

    def register(self, name: str, fn: Callable[..., Any]) -> None:
        """Register ``fn`` as the handler of task ``name`` (the non-decorator form)."""
        self.handlers.add(name, fn)

    def on_shutdown(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Await ``fn()`` after the drain (close clients the handlers used)."""
        self._on_shutdown.append(fn)

    # -- running -------------------------------------------------------------------

    def run(self, *, install_signal_handlers: bool = True, metrics_port: int | None = None) -> None:
        """Serve until SIGTERM/SIGINT (or :meth:`stop`), then drain; blocks.

        ``metrics_port``: serve ``/metrics`` and ``/healthz`` there (see :meth:`serve`).
        """

        async def main() -> None:
            if install_signal_handlers:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self._on_signal, sig)
            await self.serve(metrics_port=metrics_port)

        asyncio.run(main())

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s: draining (stop fetching, finish running tasks, commit, leave)", sig.name)
        self.stop()

    def stop(self) -> None:
        """Ask the worker to drain and stop (thread-safe, idempotent)."""
        self._stop_requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the worker consumes (``/healthz``: 200 if so, else 503), and its state:
        ``starting``, ``joining`` (no partition assignment yet), ``ok``, ``draining`` or
        ``failing`` (a consumer failed; the worker stops)."""
        failed = next((f for f in self._fetchers if f.error is not None), None)
        body: dict[str, Any] = {"worker": self.identity, "queues": self.queues}
        if failed is not None:
            body["error"] = f"the consumer of queue {failed.queue} failed: {failed.error}"
            state = "failing"
        elif self._stop_requested:
            state = "draining"
        elif not self.started.is_set():
            state = "starting"
        elif not all(f.assigned.is_set() for f in self._fetchers):
            state = "joining"
        else:
            state = "ok"
            body["in_progress"] = sum(f.in_progress for f in self._fetchers)
        return state == "ok", {"status": state, **body}

    async def serve(self, *, metrics_port: int | None = None) -> None:
        """Serve on the running loop until :meth:`stop`; returns after the drain.

        ``metrics_port``: also serve ``/metrics`` and ``/healthz`` (:meth:`health`) on
        that port of ``settings.web_host`` (``HEADRACE_WEB_HOST``) until the drain ends.
        """
        if not len(self.handlers):
            raise HeadraceError(
                ErrorCode.CONFIG_INVALID,
                f"worker for {', '.join(self.queues)} has no task handlers — register one with "
                "@worker.task('name')",
            )
        web = self._start_web(metrics_port) if metrics_port else None
        try:
            await self._serve()
        finally:
            if web is not None:
                web.close()

    def _start_web(self, port: int) -> WebServer:
        host = self.settings.web_host
        try:
            return WebServer(host, port, self.health).start()
        except OSError as exc:
            raise HeadraceError(
                ErrorCode.PORT_IN_USE,
                f"worker cannot serve /metrics and /healthz on {host}:{port}: {exc} — choose "
                "another port, or set HEADRACE_WEB_HOST to an address of this host",
            ) from exc

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        settings = self.settings
        if self.create_topics:
            for queue in self.queues:
                await self._ensure_topics(queue)
        self._sender = ResultSender(settings, f"headrace-worker-{'+'.join(self.queues)}")
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="headrace-task")
        slots = self._slots = Slots(self.concurrency)
        attempts = self._attempts = Attempts(
            loop=self._loop,
            settings=settings,
            queues=self.queues,
            handlers=self.handlers,
            sender=self._sender,
            pool=self._pool,
            slots=slots,
            identity=self.identity,
            heartbeat_fraction=self.heartbeat_fraction,
            unhandled_code=self.unhandled_code,
            unhandled_retryable=self.unhandled_retryable,
        )
        self._fetchers = [
            QueueFetcher(
                queue,
                settings,
                slots=slots,
                deliver=attempts.deliver,
                dead_letter=attempts.dead_letter,
                prefetch=self._prefetch or self.concurrency,
                revoke_grace=self.revoke_grace,
                consumer_config=self.consumer_config,
            )
            for queue in self.queues
        ]
        for fetcher in self._fetchers:
            fetcher.start()
        self.started.set()
        log.info(
            "worker %s serving %s with %s (concurrency %d)",
            self.identity,
            ", ".join(self.queues),
            ", ".join(self.handlers.names()),
            self.concurrency,
        )
        try:
            await self._until_stopped()
        finally:
            await self._drain()
        failed_fetchers = [f for f in self._fetchers if f.error is not None]
        if failed_fetchers:
            raise HeadraceError(
                ErrorCode.KAFKA_UNAVAILABLE,
                f"worker stopped: the consumer of queue {failed_fetchers[0].queue} failed: "
                f"{failed_fetchers[0].error}",
            )

    async def _ensure_topics(self, queue: str, patience: float = 60.0) -> None:
        """Create the queue's topics (idempotent), riding out a broker that is not up yet."""
        from headrace.topic_admin import ensure_task_topics

        deadline = time.monotonic() + patience
        delay = 0.5
        while True:
            try:
                await asyncio.to_thread(ensure_task_topics, self.settings, queue)
                return
            except HeadraceError as exc:
                if not exc.retryable or time.monotonic() + delay > deadline:
                    raise
                log.warning("creating the topics of queue %s: %s; retrying", queue, exc.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _until_stopped(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            if any(f.error is not None for f in self._fetchers):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.5)

    async def _drain(self) -> None:
        started_at = time.monotonic()
        for fetcher in self._fetchers:
            fetcher.stop(self.drain_timeout)
        await asyncio.gather(
            *(asyncio.to_thread(f.join, self.drain_timeout + 30) for f in self._fetchers)
        )
        left = self._attempts.unfinished() if self._attempts is not None else []
        if left:
            for task in left:
                task.cancel()
            await asyncio.wait(
                left, timeout=max(1.0, self.drain_timeout - (time.monotonic() - started_at))
            )
        if self._sender is not None:
            await asyncio.to_thread(self._sender.close)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for fn in self._on_shutdown:
            try:
                await fn()
            except Exception:
                log.exception("shutdown hook %r failed", fn)
        log.info("worker %s stopped", self.identity)
