"""Start, watch and stop one server process for the benchmark, on 127.0.0.1 only.

The benchmark must time a server from process start to its first healthy answer,
know the most memory its whole process tree held, and never leave a server
running (two servers under load on two cores would spoil each other's numbers).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
PAGE_KIB = 1024


def free_port() -> int:
    """Ask the kernel for a port nobody listens on, so runs never collide with other local servers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _status_kib(pid: int, field_name: str) -> int:
    """One `kB` field of /proc/<pid>/status, 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in field 2 may hold spaces; fields after its closing parenthesis are plain.
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_tree(root: int) -> list[int]:
    """The root pid and all its live descendants, read from /proc (psutil is not a dependency)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat), to see what else ran during a scenario."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _cpu_s(pid: int) -> float:
    try:
        after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of /proc/<pid>/stat, i.e. 11 and 12 after the name.
    return (int(after_name[11]) + int(after_name[12])) / CLOCK_TICKS


def tree_cpu_s(root: int) -> float:
    """CPU seconds used so far by the live processes of the tree."""
    return sum(_cpu_s(pid) for pid in process_tree(root))


def tree_rss_kib(root: int) -> int:
    """Resident memory of the whole tree now, in KiB."""
    return sum(_status_kib(pid, "VmRSS") for pid in process_tree(root))


def tree_hwm_kib(root: int) -> int:
    """Sum of each live process's own peak resident memory (VmHWM), in KiB."""
    return sum(_status_kib(pid, "VmHWM") for pid in process_tree(root))


@dataclass
class RssSampler:
    """Samples the tree's resident memory in the background, because a peak between reads would be missed."""

    root: int
    interval_s: float = 0.25
    peak_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin sampling until stop() is called."""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.root))
            self._stop.wait(self.interval_s)

    def stop(self) -> int:
        """Stop sampling and return the peak seen, in KiB."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.peak_kib


def http_status(url: str, data: bytes | None = None, timeout: float = 2.0) -> int:
    """Status code of one GET (or POST when data is given); 0 when nothing answered."""
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError):
        return 0


@dataclass
class RunningServer:
    """A started server: its process, its base URL and how long it took to become healthy."""

    process: subprocess.Popen[bytes]
    base_url: str
    cold_start_s: float
    sampler: RssSampler
    log_path: Path

    def stop(self, grace_s: float = 15.0) -> dict[str, float]:
        """Stop the whole process group and return its memory figures in MiB."""
        hwm_kib = tree_hwm_kib(self.process.pid)
        peak_kib = self.sampler.stop()
        _terminate_group(self.process, grace_s)
        return {"peak_rss_mib": round(max(peak_kib, 0) / PAGE_KIB, 1), "hwm_sum_mib": round(hwm_kib / PAGE_KIB, 1)}


def _terminate_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the server's own process group, then SIGKILL it if it has not left in time."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)


def start_server(
    argv: Sequence[str], env: Mapping[str, str], port: int, log_path: Path, timeout_s: float = 180.0,
    cwd: Path | None = None,
) -> RunningServer:
    """Start argv in its own process group and wait for /health to answer 200.

    The clock starts just before the process is created, so cold start includes
    interpreter start, imports and model load: what a new pod costs.
    """
    base_url = f"http://{HOST}:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv), env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd
        )
    sampler = RssSampler(process.pid)
    sampler.start()
    server = RunningServer(process, base_url, 0.0, sampler, log_path)
    try:
        server.cold_start_s = _wait_healthy(process, base_url, started, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_healthy(process: subprocess.Popen[bytes], base_url: str, started: float, timeout_s: float) -> float:
    """Poll /health every 20 ms; the seconds from start to the first 200."""
    while time.perf_counter() - started < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before it was healthy")
        if http_status(f"{base_url}/health", timeout=1.0) == 200:
            return time.perf_counter() - started
        time.sleep(0.02)
    raise TimeoutError(f"server not healthy after {timeout_s:.0f} s")
