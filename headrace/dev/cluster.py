"""A local Apache Kafka cluster in KRaft mode: one or three JVMs on 127.0.0.1.

Used by ``headrace dev kafka``, by the test suite's broker fixture and by the
reliability tests (which stop, kill and restart single nodes). Every node is a
combined controller + broker; node ``i`` (from 1) listens for clients on
``port + 2(i-1)`` and for the controller quorum on the port after it.

The cluster's folder holds ``cluster.json`` (its shape and KRaft cluster id),
the log4j2 config and one ``node-<id>`` folder per node (see
:mod:`headrace.dev.node`). The jars live apart, in the shared cache
(:mod:`headrace.dev.jars`), so many clusters share one download.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from headrace.dev.jars import KafkaJars, deploy_dir, ensure_jars
from headrace.dev.node import BrokerNode, java_program, probe
from headrace.dev.ports import ensure_free
from headrace.dev.process import STOP_TIMEOUT_S
from headrace.dev.progress import Progress, Quiet
from headrace.errors import ErrorCode, HeadraceError

STATE_FILE = "cluster.json"
START_TIMEOUT_S = 120.0
DEFAULT_HEAP = "768m"


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """The shape of a local cluster."""

    brokers: int = 1
    port: int = 9092
    version: str = "4.1.1"
    heap: str = DEFAULT_HEAP

    def __post_init__(self) -> None:
        if self.brokers < 1:
            raise HeadraceError(ErrorCode.CONFIG_INVALID, "a cluster needs at least one broker")


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What ``status`` reports about one node."""

    node_id: int
    pid: int | None
    port: int
    controller_port: int
    alive: bool
    answers: bool
    data_dir: Path
    log_file: Path


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka's own generator skips ids starting with '-' (they read as CLI flags).
        if not text.startswith("-"):
            return text


class KafkaCluster:
    """A local KRaft cluster rooted at a folder; ``up`` is idempotent."""

    def __init__(
        self,
        root: Path,
        spec: ClusterSpec,
        cache_home: Path,
        progress: Progress | None = None,
        die_with_parent: bool = False,
    ) -> None:
        """``die_with_parent``: the JVMs are killed when this process dies (for tests)."""
        self.root = root
        self.die_with_parent = die_with_parent
        self.spec = spec
        self.cache_home = cache_home
        self.progress: Progress = progress or Quiet()
        self.nodes = [
            BrokerNode(
                node_id=i,
                dir=root / f"node-{i}",
                port=spec.port + 2 * (i - 1),
                controller_port=spec.port + 2 * (i - 1) + 1,
                heap=spec.heap,
            )
            for i in range(1, spec.brokers + 1)
        ]
        self._jars: KafkaJars | None = None
        self._java: str | None = None

    @classmethod
    def open(
        cls, root: Path, cache_home: Path, progress: Progress | None = None
    ) -> KafkaCluster | None:
        """The cluster last brought up in ``root``, or None if there is none."""
        stored = cls._read_state(root)
        if stored is None:
            return None
        spec = ClusterSpec(
            brokers=int(stored["brokers"]),
            port=int(stored["port"]),
            version=str(stored["version"]),
            heap=str(stored.get("heap", DEFAULT_HEAP)),
        )
        return cls(root, spec, cache_home, progress)

    @staticmethod
    def _read_state(root: Path) -> dict[str, Any] | None:
        try:
            data = json.loads((root / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def log4j2_config(self) -> Path:
        return self.root / "log4j2.xml"

    def node(self, node_id: int) -> BrokerNode:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(f"no node {node_id}; nodes are {[n.node_id for n in self.nodes]}")

    def running(self) -> list[BrokerNode]:
        return [n for n in self.nodes if n.alive()]

    # -- bringing it up --------------------------------------------------------

    def up(self, timeout: float = START_TIMEOUT_S) -> str:
        """Download (if needed), format (if needed), start every node, wait; return bootstrap."""
        self._check_compatible()
        if len(self.running()) == len(self.nodes):
            self._wait_ready(time.monotonic() + timeout)
            self.progress.info(f"Kafka already running at {self.bootstrap}")
            return self.bootstrap
        down = [n for n in self.nodes if not n.alive()]
        ensure_free(
            [p for n in down for p in (n.port, n.controller_port)],
            f"the local Kafka in {self.root}",
        )
        java, jars = self._prepare()
        cluster_id = self._cluster_id()
        with self.progress.step("Formatting KRaft storage"), ThreadPoolExecutor(len(down)) as pool:
            list(pool.map(lambda n: n.format(java, jars, self.log4j2_config, cluster_id), down))
        for n in down:
            n.start(java, jars, self.log4j2_config, self.die_with_parent)
        try:
            noun = "broker" if len(self.nodes) == 1 else "brokers"
            with self.progress.step(f"Waiting for {len(self.nodes)} {noun} to answer"):
                self._wait_ready(time.monotonic() + timeout)
        except HeadraceError:
            for n in down:
                n.kill()
            raise
        self.progress.info(f"Kafka {self.spec.version} is up at {self.bootstrap}")
        return self.bootstrap

    def _check_compatible(self) -> None:
        stored = self._read_state(self.root)
        if stored is None:
            return
        if stored.get("brokers") == self.spec.brokers and stored.get("port") == self.spec.port:
            return
        previous = KafkaCluster.open(self.root, self.cache_home)
        if previous is not None and previous.running():
            raise HeadraceError(
                ErrorCode.CONFIG_INVALID,
                f"a local Kafka with {stored.get('brokers')} broker(s) on port "
                f"{stored.get('port')} already runs from {self.root} — stop it first "
                "(`headrace dev kafka down`)",
            )
        if stored.get("brokers") != self.spec.brokers and any(n.formatted for n in self.nodes):
            raise HeadraceError(
                ErrorCode.CONFIG_INVALID,
                f"the data in {self.root} belongs to a {stored.get('brokers')}-broker cluster; "
                f"a {self.spec.brokers}-broker cluster cannot reuse it — delete it with "
                "`headrace dev kafka down --wipe` (it holds only local dev data), then retry",
            )

    def _prepare(self) -> tuple[str, KafkaJars]:
        if self._java is None:
            self._java = java_program()
        if self._jars is None:
            self._jars = ensure_jars(self.spec.version, self.cache_home, self.progress)
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(deploy_dir() / "log4j2.xml", self.log4j2_config)
        return self._java, self._jars

    def _cluster_id(self) -> str:
        stored = self._read_state(self.root) or {}
        cluster_id = str(stored.get("cluster_id") or new_cluster_id())
        for n in self.nodes:
            n.dir.mkdir(parents=True, exist_ok=True)
            n.properties_file.write_text(self._properties(n))
        state = {**asdict(self.spec), "cluster_id": cluster_id}
        (self.root / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        return cluster_id

    def _properties(self, node: BrokerNode) -> str:
        n = len(self.nodes)
        replication = min(n, 3)
        min_isr = 2 if n >= 3 else 1
        voters = ",".join(f"{m.node_id}@127.0.0.1:{m.controller_port}" for m in self.nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": node.data_dir,
            "num.partitions": 1,
            "default.replication.factor": replication,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replication,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min_isr,
            # Dev and tests start consumer groups constantly; don't make each
            # first join wait for the default 3 s of stragglers.
            "group.initial.rebalance.delay.ms": 0,
            # A restarted node is refused (DUPLICATE_BROKER_REGISTRATION) until
            # its killed incarnation's session expires, and partitions led by a
            # killed node move only then: 4.5 s instead of 9 s halves both for
            # the reliability tests, and still rides out a GC pause on 2 cores.
            "broker.heartbeat.interval.ms": 1000,
            "broker.session.timeout.ms": 4500,
            # Every partition holds a few file descriptors until its files are
            # deleted, 60 s after the topic by default; tests create and delete
            # thousands of topics against a limit (often 20,000) that a container
            # may not raise, so let go of them at once.
            "file.delete.delay.ms": 1000,
        }
        header = "# written by headrace dev kafka; edits are overwritten on the next `up`\n"
        return header + "".join(f"{k}={v}\n" for k, v in props.items())

    def _wait_ready(self, deadline: float) -> None:
        for n in self.nodes:
            n.wait_ready(len(self.nodes), deadline)

    # -- single nodes (reliability tests) --------------------------------------

    def start_node(self, node_id: int, timeout: float = START_TIMEOUT_S) -> None:
        """Start one stopped node and wait until it is back in the cluster."""
        n = self.node(node_id)
        if n.alive():
            return
        ensure_free([n.port, n.controller_port], f"Kafka node {node_id}")
        java, jars = self._prepare()
        n.start(java, jars, self.log4j2_config, self.die_with_parent)
        n.wait_ready(len(self.nodes), time.monotonic() + timeout)

    def stop_node(self, node_id: int, timeout: float = STOP_TIMEOUT_S) -> None:
        """Graceful stop of one node (SIGTERM, controlled shutdown)."""
        self.node(node_id).stop(timeout)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would."""
        self.node(node_id).kill()

    # -- taking it down --------------------------------------------------------

    def down(self, timeout: float = STOP_TIMEOUT_S) -> list[int]:
        """Stop every node and wait for the exits; returns the node ids that were running."""
        live = self.running()
        # A broker's graceful shutdown asks the controller quorum to move its
        # leaderships away; without a quorum (a majority of nodes gone, as
        # reliability tests leave it) it waits for an answer that never comes.
        # Then SIGKILL is what a graceful stop would end in anyway.
        graceful = len(live) > len(self.nodes) // 2
        sig = signal.SIGTERM if graceful else signal.SIGKILL
        # All nodes get the signal together: stopping them one by one lets the
        # last ones lose their quorum mid-shutdown and hang until killed.
        pids = {n.node_id: n.process.signal(sig) for n in self.nodes}
        deadline = time.monotonic() + (timeout if graceful else 10.0)
        for n in self.nodes:
            pid = pids[n.node_id]
            if pid is not None:
                n.process.wait_exit(pid, deadline)
            # SIGKILL if still up past the deadline; either way reaps and clears the pid file.
            n.kill()
        return [i for i, pid in pids.items() if pid is not None]

    def wipe(self) -> None:
        """Delete every node's data; the cluster must be down."""
        if self.running():
            raise HeadraceError(
                ErrorCode.CONFIG_INVALID, f"the Kafka in {self.root} is running; stop it first"
            )
        for n in self.nodes:
            n.wipe()
        (self.root / STATE_FILE).unlink(missing_ok=True)

    # -- looking at it ---------------------------------------------------------

    def status(self) -> list[NodeStatus]:
        out = []
        for n in self.nodes:
            pid = n.pid()
            answers = pid is not None and probe(n.bootstrap, timeout=2.0) is not None
            out.append(
                NodeStatus(
                    n.node_id,
                    pid,
                    n.port,
                    n.controller_port,
                    pid is not None,
                    answers,
                    n.data_dir,
                    n.log_file,
                )
            )
        return out
