"""Local TCP ports for dev brokers: is a port free, who holds it, find a free block."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

from headrace.errors import ErrorCode, HeadraceError

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Kafka listens with SO_REUSEADDR, so a port left in TIME_WAIT is usable
        # for it; probe the same way or we would report false conflicts.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != _LISTEN:
                continue
            if int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def port_owner(port: int) -> str | None:
    """Describe the process listening on ``port`` (``"pid 42: java -cp ..."``), if visible.

    Reads /proc, so it only sees processes this user may inspect; ``None`` means
    nobody listens or the owner is hidden from us.
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    return f"pid {pid_dir.name}: {_cmdline(int(pid_dir.name))}"
            except OSError:
                continue
    return "a process this user cannot inspect"


def _cmdline(pid: int, limit: int = 120) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    argv = [a for a in argv if a]
    text = " ".join(argv)
    if len(text) <= limit or len(argv) < 3:
        return text[:limit]
    # JVM flags fill the middle; the program and its last arguments say what it is.
    return f"{Path(argv[0]).name} … {' '.join(argv[-2:])}"[: limit * 2]


def ensure_free(ports: list[int], what: str) -> None:
    """Raise ``PORT_IN_USE`` naming the first taken port of ``ports`` and its owner."""
    for port in ports:
        if not is_free(port):
            owner = port_owner(port)
            held = f" (held by {owner})" if owner else ""
            raise HeadraceError(
                ErrorCode.PORT_IN_USE,
                f"port {port} on 127.0.0.1, needed by {what}, is taken{held} — "
                "stop that process or choose another port with --port",
            )


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port_block(count: int, low: int = 20000, high: int | None = None) -> int:
    """First port of ``count`` consecutive free ports, chosen at random in ``[low, high)``.

    ``high`` defaults to the start of the kernel's ephemeral range: a port in
    that range can be taken at any moment as the local end of some outgoing
    connection (even the broker's own connection to its controller port).
    Random so that parallel test sessions rarely pick the same block; another
    process can still take a port between this check and the broker's bind.
    """
    if high is None:
        high = _ephemeral_range()[0]
    rng = random.Random()
    for _ in range(200):
        start = rng.randrange(low, high - count)
        if all(is_free(p) for p in range(start, start + count)):
            return start
    raise HeadraceError(
        ErrorCode.PORT_IN_USE,
        f"found no {count} consecutive free ports in {low}..{high} after 200 tries",
    )
