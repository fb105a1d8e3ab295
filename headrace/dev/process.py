"""A background process that outlives the command that started it, tracked by a pid file.

Used for Kafka nodes and for the headrace services ``headrace dev up`` starts.
The pid file alone is not trusted: a pid counts as ours only while its
``/proc/<pid>/cmdline`` or ``environ`` still contains the process's ``marker``
(a path unique to it), so a recycled pid is never signalled.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

STOP_TIMEOUT_S = 30.0


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (reaping it first if it is our exited child)."""
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
        return True
    # The main thread of a killed JVM turns zombie while its other threads are
    # still exiting and still hold its sockets; the process is gone (its ports
    # free) only once no other thread is left.
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


_PR_SET_PDEATHSIG = 1


# A broker keeps several files open per partition (segments, indexes); a test
# run or a busy dev box creates thousands of partitions, and the usual limit of a
# few thousand descriptors then stops the broker ("Too many open files").
WANTED_OPEN_FILES = 262_144


def _raise_open_files() -> None:
    """Runs in the child between fork and exec: allow many open files (as far as we may)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(hard, WANTED_OPEN_FILES), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return
        except (ValueError, OSError):
            continue


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: ask for SIGKILL when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _prepare_child(die_with_parent: bool) -> None:
    _raise_open_files()
    if die_with_parent:
        _die_with_parent()


@dataclass
class Background:
    """One detached process: its pid file, its marker (an argument or ``NAME=value`` in its
    environment), and the file its output goes to."""

    pid_file: Path
    marker: str
    output: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def pid(self) -> int | None:
        """Pid of the running process, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        # A whole NUL-terminated argument or variable, so /x/api never matches /x/api2.
        marker = self.marker.encode() + b"\0"
        for part in ("cmdline", "environ"):
            try:
                if marker in Path(f"/proc/{pid}/{part}").read_bytes():
                    return pid
            except OSError:
                return None
        return None

    def alive(self) -> bool:
        return self.pid() is not None

    def start(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        die_with_parent: bool = False,
    ) -> int:
        """Start ``argv`` in its own session, output appended to ``output``; return its pid.

        ``die_with_parent`` (Linux) has the kernel SIGKILL it when the process
        that started it dies, so a test run that is itself killed leaves no
        JVM behind; ``headrace dev`` leaves it off, its processes outlive it.
        The kernel watches the *thread* that calls this: start from a thread
        that lives as long as the process should (the main thread in tests).
        """
        running = self.pid()
        if running is not None:
            return running
        visible = [*argv, *(f"{k}={v}" for k, v in (env or {}).items())]
        if self.marker not in visible:
            raise ValueError(f"marker {self.marker!r} must appear in argv or env")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        with self.output.open("ab") as out:
            # A new session: Ctrl-C in the terminal that ran `headrace dev up`
            # must not reach the broker, and killpg reaches the whole tree.
            self._proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: _prepare_child(die_with_parent),
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        return self._proc.pid

    def signal(self, sig: signal.Signals) -> int | None:
        """Send ``sig`` to the process group; return the pid (None if it was not running)."""
        pid = self.pid()
        if pid is None:
            return None
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return None
        return pid

    @staticmethod
    def wait_exit(pid: int, deadline: float) -> bool:
        """Wait until ``pid`` exits; False if it still runs at ``deadline``."""
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM, wait, SIGKILL after ``timeout``; True if it was running."""
        pid = self.signal(signal.SIGTERM)
        if pid is not None and not self.wait_exit(pid, time.monotonic() + timeout):
            self.kill()
        self.forget()
        return pid is not None

    def kill(self) -> bool:
        """SIGKILL, as a crash would; returns once the process is gone. True if it was running."""
        pid = self.signal(signal.SIGKILL)
        if pid is not None:
            self.wait_exit(pid, time.monotonic() + 10)
        self.forget()
        return pid is not None

    def forget(self) -> None:
        """Drop the pid file (and reap our child), after the process has exited."""
        if self._proc is not None:
            self._proc.poll()
            self._proc = None
        self.pid_file.unlink(missing_ok=True)
