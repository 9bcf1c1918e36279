"""What the benchmark scripts share: the server process, handshakes, statistics."""

from __future__ import annotations

import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


class Servers:
    """benchmarks/servers.py in a child process, so its work is not measured here."""

    def __init__(self, aia_latency_ms: float = 50.0) -> None:
        self._latency = aia_latency_ms
        self.info: dict[str, Any] = {}

    def __enter__(self) -> Servers:
        self._dir = tempfile.TemporaryDirectory(prefix="aia-ext-bench-")
        self._proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "servers.py"), self._dir.name,
             "--aia-latency-ms", str(self._latency)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark servers failed to start")
        self.info = json.loads(line)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(30)
        self._dir.cleanup()

    def port(self, name: str) -> int:
        return int(self.info[name])

    @property
    def root(self) -> str:
        return str(self.info["root"])

    def hits(self, path: str = "/int.der") -> int:
        url = f"http://127.0.0.1:{self.info['aia']}/_hits"
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(json.load(response).get(path, 0))


def handshake(context: ssl.SSLContext, port: int, hostname: str = "localhost") -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        context.wrap_socket(raw, server_hostname=hostname).close()


def timed_handshakes(context: ssl.SSLContext, port: int, count: int) -> float:
    """Seconds per handshake, averaged over ``count`` sequential handshakes."""
    started = time.perf_counter()
    for _ in range(count):
        handshake(context, port)
    return (time.perf_counter() - started) / count


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if models:
            cpu = models[0]
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "openssl": ssl.OPENSSL_VERSION,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }
