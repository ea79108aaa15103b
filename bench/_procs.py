"""Child processes of a benchmark run: each in its own process group, all stopped at the end.

:class:`Processes` is a context manager. Everything started through it gets its own
session (so a stop reaches the grandchildren too), a raised file-descriptor limit (10,000
queries in flight need 10,000 sockets), and is stopped on exit — normal, exception or
Ctrl-C — with SIGTERM to the group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = ["PYTHON", "ProcessGroups", "Processes", "free_port", "raise_fd_limit",
           "wait_for_port"]

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


class ProcessGroups:
    """Named groups of other processes whose CPU time a measuring child reads at the edges
    of its window: ``--process NAME=PID[,PID...]``, repeatable."""

    def __init__(self, specs: Sequence[str] | None) -> None:
        # Imported here, not at the top: what imports this module only for its process
        # handling (bench.httpfanout, its test) runs without the bench extra.
        import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

        self._groups = {name: [psutil.Process(int(pid)) for pid in pids.split(",")]
                        for name, _, pids in (s.partition("=") for s in specs or ())}

    def cpu(self) -> dict[str, float]:
        """User + system seconds of each group so far (all threads, summed)."""
        return {name: sum(float(t.user + t.system) for t in (p.cpu_times() for p in procs))
                for name, procs in self._groups.items()}

    @staticmethod
    def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in after}


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is not None:
        # The leader is gone; its group may still hold children.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable: leave it
        pass


class Processes:
    """Starts children in their own process groups; stops them all (newest first) on exit."""

    def __init__(self, logdir: Path) -> None:
        raise_fd_limit()  # inherited by every child
        self.logdir = logdir
        self._running: list[tuple[str, subprocess.Popen[bytes], float]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()

    def start(self, name: str, argv: Sequence[str], *, stdout: int | IO[bytes] | None = None,
              stdin: int | None = subprocess.DEVNULL, grace: float = 5.0,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv``; its stderr (and stdout unless given) go to ``logdir/name.log``."""
        log = (self.logdir / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                list(argv), stdin=stdin,
                stdout=log if stdout is None else stdout, stderr=log,
                start_new_session=True,
                env=env if env is not None else child_env(),
            )
        finally:
            log.close()
        self._running.append((name, proc, grace))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        for i, (_, p, grace) in enumerate(self._running):
            if p is proc:
                del self._running[i]
                _stop_group(p, grace)
                return

    def stop_all(self) -> None:
        # Ctrl-C while stopping must not leave the rest running.
        with _IgnoringSigint():
            while self._running:
                _, proc, grace = self._running.pop()
                _stop_group(proc, grace)

    def check_alive(self) -> None:
        """Raise if a child died unexpectedly, naming its log."""
        for name, proc, _ in self._running:
            if proc.poll() is not None:
                tail = _tail(self.logdir / f"{name}.log")
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


class _IgnoringSigint:
    def __enter__(self) -> None:
        self._old = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._old)


def which(binary: str) -> str:
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists()
                                     else None)
    if found is None:
        raise RuntimeError(f"{binary} is not installed")
    return found


def start_mosquitto(procs: Processes, root: Path) -> tuple[int, int]:
    """The benchmark's own Mosquitto on a free port: its port and pid. ``set_tcp_nodelay``,
    no persistence, and a client may have 1,000 publishes unacknowledged (Receive Maximum),
    as deploy/mosquitto.conf."""
    port = free_port()
    conf = root / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    "set_tcp_nodelay true\npersistence false\n"
                    "max_queued_messages 1000000\nmax_inflight_messages 1000\n",
                    encoding="utf-8")
    pid = procs.start("mosquitto", [which("mosquitto"), "-c", str(conf)]).pid
    wait_for_port(port)
    return port, pid
