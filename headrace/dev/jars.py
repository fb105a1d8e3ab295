"""The Apache Kafka broker's jars, fetched from Maven Central into a cache folder.

``deploy/kafka/pom.xml`` lists the broker (``kafka_2.13``), its tools and the
log binding; ``mvn dependency:copy-dependencies`` copies them with their
runtime dependencies into ``<home>/kafka-<version>/libs``. A marker file is
written only after a complete copy, so an interrupted download is redone
instead of starting a broker with half a classpath.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from headrace.dev.progress import Progress, Quiet
from headrace.errors import ErrorCode, HeadraceError

MARKER = ".complete"
DOWNLOAD_TIMEOUT_S = 900


def deploy_dir() -> Path:
    """``deploy/kafka`` of the source checkout this package runs from."""
    here = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
    if not (here / "pom.xml").is_file():
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID,
            f"cannot find {here / 'pom.xml'}: `headrace dev` runs the broker from a source "
            "checkout of headrace — install it with `pip install -e .` from the repository",
        )
    return here


@dataclass(frozen=True, slots=True)
class KafkaJars:
    """A complete, cached copy of one Kafka version's jars."""

    version: str
    root: Path

    @property
    def libs(self) -> Path:
        return self.root / "libs"

    @property
    def classpath(self) -> str:
        return f"{self.libs}/*"


def require_program(name: str, why: str, install_hint: str) -> str:
    """Path of ``name`` on PATH, or ``DEPENDENCY_MISSING`` saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise HeadraceError(
            ErrorCode.DEPENDENCY_MISSING,
            f"`{name}` is not on PATH; {why} — install it ({install_hint}) and retry",
        )
    return path


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def cached(version: str, home: Path) -> KafkaJars | None:
    """The cached jars of ``version`` when a complete copy of the current pom's set exists."""
    jars = KafkaJars(version, home / f"kafka-{version}")
    try:
        marker = json.loads((jars.root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("pom_sha256") != _pom_digest(deploy_dir() / "pom.xml"):
        return None
    if not jars.libs.is_dir() or not any(jars.libs.glob("kafka_2.13-*.jar")):
        return None
    return jars


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        # Two test sessions (or a test and `make dev`) may fetch at once; one
        # downloads, the other waits and then finds the marker.
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars(version: str, home: Path, progress: Progress | None = None) -> KafkaJars:
    """Return the jars of Kafka ``version``, downloading them with mvn if not cached."""
    progress = progress or Quiet()
    found = cached(version, home)
    if found is not None:
        progress.info(f"Kafka {version} jars: cached in {found.libs}")
        return found
    with _locked(home / f"kafka-{version}.lock"):
        found = cached(version, home)
        if found is not None:
            return found
        mvn = require_program(
            "mvn", "it downloads the Kafka broker from Maven Central", "apt-get install maven"
        )
        jars = KafkaJars(version, home / f"kafka-{version}")
        pom = deploy_dir() / "pom.xml"
        partial = jars.root / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        (jars.root / MARKER).unlink(missing_ok=True)
        partial.mkdir(parents=True)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
            f"-Dkafka.version={version}",
        ]
        with progress.step(f"Downloading Apache Kafka {version} from Maven Central"):
            try:
                done = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    timeout=DOWNLOAD_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise HeadraceError(
                    ErrorCode.DOWNLOAD_FAILED,
                    f"mvn did not finish downloading Kafka {version} within "
                    f"{DOWNLOAD_TIMEOUT_S}s — check the network and retry",
                ) from exc
        if done.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
            raise HeadraceError(
                ErrorCode.DOWNLOAD_FAILED,
                f"mvn could not fetch Kafka {version} (exit {done.returncode}) with "
                f"{pom}; last lines:\n{tail}\n— check the version exists on Maven Central "
                "and that the network reaches it, then retry",
            )
        shutil.rmtree(jars.libs, ignore_errors=True)
        partial.rename(jars.libs)
        count = sum(1 for _ in jars.libs.glob("*.jar"))
        (jars.root / MARKER).write_text(
            json.dumps({"version": version, "jars": count, "pom_sha256": _pom_digest(pom)})
        )
        progress.info(f"Kafka {version}: {count} jars in {jars.libs}")
        return jars
