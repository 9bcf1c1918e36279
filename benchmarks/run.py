"""aia_ext benchmarks: ratios against baselines measured in the same run.

    python benchmarks/run.py [--quick] [--json out.json] [--strict]

Every figure is a median over rounds, with its spread (min..max over rounds).
Handshakes go to local TLS servers (ECDSA P-256) in a separate process.
--quick takes about a minute; the full run a few minutes.  --strict exits 1
when a target is missed.  The competitors (aia, aia-chaser) are measured when
importable: pip install -r benchmarks/requirements.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import ssl
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from harness import HERE, Servers, handshake, machine, rss_bytes, spread, timed_handshakes

import aia_ext
from aia_ext._private.chase import finished


@dataclass
class Result:
    name: str
    what: str
    value: float | None
    unit: str
    target: str = "report"
    met: bool | None = None
    spread: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""


@dataclass
class Settings:
    rounds: int
    handshakes: int
    memory_handshakes: int
    threads_each: int
    process_runs: int


QUICK = Settings(rounds=5, handshakes=100, memory_handshakes=1500, threads_each=8,
                 process_runs=3)
FULL = Settings(rounds=5, handshakes=500, memory_handshakes=10_000, threads_each=30,
                process_runs=5)


def _ratio_rounds(settings: Settings, baseline: Callable[[], float],
                  candidate: Callable[[], float]) -> tuple[list[float], list[float], list[float]]:
    """Interleaved rounds so drift hits both sides alike: (ratios, base, cand)."""
    ratios, base, cand = [], [], []
    for _ in range(settings.rounds):
        b = baseline()
        c = candidate()
        base.append(b)
        cand.append(c)
        ratios.append(c / b)
    return ratios, base, cand


#: Targets per engine (issue 13 for the fallback): complete chain, leaf-only warm.
FALLBACK = aia_ext.engine_of(aia_ext.create_default_context()) == "fallback"
FULL_TARGET, WARM_TARGET = (1.10, 1.15) if FALLBACK else (1.02, 1.10)  # issue 23: 1.02


def _real_size_store(context: ssl.SSLContext) -> ssl.SSLContext:
    """certifi's ~140 roots beside the benchmark's own, as most users' contexts hold."""
    import certifi

    context.load_verify_locations(certifi.where())
    return context


def _pair(servers: Servers, **options: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(plain ssl, aia_ext) contexts trusting the same real-size store."""
    return (_real_size_store(ssl.create_default_context(cafile=servers.root)),
            _real_size_store(aia_ext.create_default_context(cafile=servers.root, **options)))


def full_overhead(servers: Servers, settings: Settings) -> Result:
    plain, enabled = _pair(servers)
    port = servers.port("full")
    for ctx in (plain, enabled):  # warm-up
        timed_handshakes(ctx, port, 20)
    ratios, base, cand = _ratio_rounds(
        settings,
        lambda: timed_handshakes(plain, port, settings.handshakes),
        lambda: timed_handshakes(enabled, port, settings.handshakes))
    median = statistics.median(ratios)
    return Result("full_overhead", "complete chain: enabled / plain ssl", median, "x",
                  f"<= {FULL_TARGET:.2f}", median <= FULL_TARGET, spread(ratios),
                  {"plain_ms": statistics.median(base) * 1000,
                   "enabled_ms": statistics.median(cand) * 1000,
                   "handshakes_per_round": settings.handshakes})


def warm_incomplete(servers: Servers, settings: Settings) -> Result:
    plain, enabled = _pair(servers)
    full, leaf_only = servers.port("full"), servers.port("leaf_only")
    timed_handshakes(plain, full, 20)
    timed_handshakes(enabled, leaf_only, 20)  # warms the cache
    ratios, base, cand = _ratio_rounds(
        settings,
        lambda: timed_handshakes(plain, full, settings.handshakes),
        lambda: timed_handshakes(enabled, leaf_only, settings.handshakes))
    median = statistics.median(ratios)
    return Result("warm_incomplete", "leaf-only, warm cache / plain ssl on a complete chain",
                  median, "x", f"<= {WARM_TARGET:.2f}", median <= WARM_TARGET, spread(ratios),
                  {"plain_full_ms": statistics.median(base) * 1000,
                   "enabled_leaf_only_ms": statistics.median(cand) * 1000})


def pool_2000(servers: Servers, settings: Settings) -> Result:
    """A pool of 2,000 intermediates (the needed one last) completes a leaf-only chain."""
    started = time.perf_counter()
    plain, pooled = _pair(servers, intermediates=servers.info["pool"], max_fetches=0)
    load_ms = (time.perf_counter() - started) * 1000
    full, leaf_only = servers.port("full"), servers.port("leaf_only")
    before = _aia_hits(servers)
    timed_handshakes(plain, full, 20)
    timed_handshakes(pooled, leaf_only, 20)
    ratios, base, cand = _ratio_rounds(
        settings,
        lambda: timed_handshakes(plain, full, settings.handshakes),
        lambda: timed_handshakes(pooled, leaf_only, settings.handshakes))
    fetches = _aia_hits(servers) - before
    median = statistics.median(ratios)
    return Result("pool_2000", "leaf-only, pool of 2,000 (needed last), 0 fetches / plain ssl "
                  "on a complete chain", median, "x", f"<= {WARM_TARGET:.2f} and 0 fetches",
                  median <= WARM_TARGET and fetches == 0, spread(ratios),
                  {"fetches": fetches, "pool_load_ms": load_ms,
                   "plain_full_ms": statistics.median(base) * 1000,
                   "pooled_leaf_only_ms": statistics.median(cand) * 1000})


def _aia_hits(servers: Servers) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{servers.port('aia')}/_hits",
                                timeout=10) as response:
        return int(json.loads(response.read()).get("/int.der", 0))


def _first_response_ms(context: ssl.SSLContext, port: int) -> float:
    import http.client

    started = time.perf_counter()
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000


def cold_first_request(servers: Servers, settings: Settings) -> Result:
    chases: list[Any] = []  # aia_ext._private.chase.core.Chase
    finished.observers.append(chases.append)
    totals, fetch, parse, reverify, baseline = [], [], [], [], []
    try:
        for _ in range(settings.rounds):
            aia_ext.clear_cache()
            chases.clear()
            ctx = aia_ext.create_default_context(cafile=servers.root)
            totals.append(_first_response_ms(ctx, servers.port("leaf_only")))
            last = chases[-1]
            assert last.ok, "cold handshake did not complete"
            fetch.append(last.fetch_ms)
            parse.append(last.parse_ms)
            reverify.append(last.reverify_ms)
            plain = ssl.create_default_context(cafile=servers.root)
            baseline.append(_first_response_ms(plain, servers.port("full")))
    finally:
        finished.observers.remove(chases.append)
    return Result("cold_first_request", "leaf-only, cold cache: time to first verified response",
                  statistics.median(totals), "ms", "report", None, spread(totals),
                  {"fetch_ms": statistics.median(fetch), "parse_ms": statistics.median(parse),
                   "reverify_ms": statistics.median(reverify),
                   "plain_complete_chain_ms": statistics.median(baseline)})


def ccadb_load(servers: Servers, settings: Settings) -> Result:
    """The 2,000 intermediates of pool_2000 as a CCADB report (CSV), loaded by
    ``intermediates=``: what preloading costs at context creation (issue 23)."""
    import csv
    import hashlib
    import io

    from aia_ext._private.bundle import pem_blocks

    with open(servers.info["pool"], "rb") as f:
        ders = pem_blocks(f.read(), 10_000)
    out = io.StringIO(newline="")
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(["CA Owner", "Certificate Name", "SHA-256 Fingerprint", "PEM Info"])
    for der in ders:
        pem = ssl.DER_cert_to_PEM_cert(der).strip().replace("\n", "\r\n")
        writer.writerow(["Example, Inc.", "x", hashlib.sha256(der).hexdigest().upper(),
                         f"'{pem}'"])
    report = out.getvalue().encode()
    values = []
    for _ in range(settings.rounds):
        started = time.perf_counter()
        aia_ext.create_default_context(intermediates=report)
        values.append((time.perf_counter() - started) * 1000)
    base = [_timed_context() for _ in range(settings.rounds)]
    median = statistics.median(values) - statistics.median(base)
    return Result("ccadb_load", f"a CCADB report of {len(ders):,} rows into a pool, "
                  "at context creation", median, "ms", "report", None, spread(values),
                  {"report_bytes": len(report)})


def _timed_context() -> float:
    started = time.perf_counter()
    aia_ext.create_default_context()
    return (time.perf_counter() - started) * 1000


def learned_memory(servers: Servers, settings: Settings) -> Result:
    """Memory held per 1,000 learned intermediates (issue 23), with tracemalloc."""
    import tracemalloc

    from aia_ext._private.bundle import pem_blocks
    from aia_ext._private.chase import learned
    from aia_ext._private.options import DEFAULT

    with open(servers.info["pool"], "rb") as f:
        ders = [bytes(d) for d in pem_blocks(f.read(), 10_000)][:1000]
    aia_ext.clear_cache()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    learned.learn(ders, DEFAULT)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    count = len(learned.store)
    aia_ext.clear_cache()
    per_thousand = used / 1024 / count * 1000
    return Result("learned_memory", f"memory per 1,000 learned intermediates ({count} learned; "
                  f"the bound is {learned.MAX_LEARNED:,})", per_thousand, "KiB", "report",
                  None, {}, {"at_the_bound_MiB": per_thousand * learned.MAX_LEARNED / 1000
                               / 1024})


def _in_process(tool: str, url: str, root: str) -> float:
    """Milliseconds from import to first verified response, in a fresh process."""
    env = dict(os.environ, SSL_CERT_FILE=root)
    env.pop("SSL_CERT_DIR", None)
    out = subprocess.run([sys.executable, os.path.join(HERE, "competitors.py"), tool, url],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{tool} failed: {out.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["body"] != "ok\n":
        raise RuntimeError(f"{tool} got an unexpected body {result['body']!r}")
    return float(result["ms"])


def _versus(name: str, module: str, tool: str, servers: Servers, settings: Settings,
            server: str) -> Result:
    what = f"cold process, import + first verified response: {tool} / aia_ext"
    if importlib.util.find_spec(module) is None:
        return Result(name, what, None, "x", ">= 1.2",
                      skipped=f"{tool} is not installed (pip install -r "
                              f"benchmarks/requirements.txt)")
    if server not in servers.info:
        return Result(name, what, None, "x", ">= 1.2",
                      skipped="this process may not bind 127.0.0.1:443, which aia requires")
    port = servers.port(server)
    url = f"https://localhost:{port}/" if port != 443 else "https://localhost/"
    ratios, ours, theirs = [], [], []
    for _ in range(settings.process_runs):
        a = _in_process("aia_ext", url, servers.root)
        b = _in_process(tool, url, servers.root)
        ours.append(a)
        theirs.append(b)
        ratios.append(b / a)
    median = statistics.median(ratios)
    return Result(name, what, median, "x", ">= 1.2", median >= 1.2, spread(ratios),
                  {"aia_ext_ms": statistics.median(ours), f"{tool}_ms": statistics.median(theirs)})


def concurrency(servers: Servers, settings: Settings) -> Result:
    threads = 32

    def throughput(ctx: ssl.SSLContext, port: int) -> float:
        barrier = threading.Barrier(threads)
        errors: list[BaseException] = []

        def worker() -> None:
            barrier.wait()
            try:
                for _ in range(settings.threads_each):
                    handshake(ctx, port)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        started = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        if errors:
            raise RuntimeError(f"{len(errors)} handshakes failed: {errors[0]!r}")
        return threads * settings.threads_each / (time.perf_counter() - started)

    aia_ext.clear_cache()
    before = servers.hits()
    enabled = aia_ext.create_default_context(cafile=servers.root)
    plain = ssl.create_default_context(cafile=servers.root)
    ours = throughput(enabled, servers.port("leaf_only"))  # starts cold
    fetches = servers.hits() - before
    theirs = throughput(plain, servers.port("full"))
    return Result("concurrency", f"{threads} threads, cold cache, leaf-only server",
                  float(fetches), "fetches", "== 1", fetches == 1, {},
                  {"handshakes_per_s": ours, "plain_full_handshakes_per_s": theirs,
                   "throughput_ratio": ours / theirs})


def memory(servers: Servers, settings: Settings) -> Result:
    ctx = aia_ext.create_default_context(cafile=servers.root)
    port = servers.port("leaf_only")
    growth = {}
    for label, cold in (("fetching", True), ("cached", False)):
        warmup = min(500, settings.memory_handshakes // 4)
        for _ in range(warmup):
            if cold:
                aia_ext.clear_cache()
            handshake(ctx, port)
        gc.collect()
        start = rss_bytes()
        for _ in range(settings.memory_handshakes):
            if cold:
                aia_ext.clear_cache()
            handshake(ctx, port)
        gc.collect()
        growth[label] = (rss_bytes() - start) / (1024 * 1024)
    worst = max(growth.values())
    return Result("memory", f"RSS growth over {settings.memory_handshakes} handshakes "
                  "after warm-up (worst of fetching / cached)", worst, "MiB", "<= 2",
                  worst <= 2.0, {}, {"fetching_mib": growth["fetching"],
                                     "cached_mib": growth["cached"],
                                     "handshakes": settings.memory_handshakes})


def _process_ms(code: str, runs: int, **extra: str) -> list[float]:
    """Wall-clock ms of ``python -c code`` in fresh processes (bytecode cached)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("AIA_EXT_INJECT", None)
    env.update(extra)
    values = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        values.append((time.perf_counter() - started) * 1000)
    return values


def import_time(servers: Servers, settings: Settings) -> list[Result]:
    """What ``import aia_ext`` and injecting cost a process, above an empty interpreter,
    beside ``import ssl`` measured the same way in the same run (issues 25 and 31)."""
    runs = max(15, settings.process_runs * 5)
    _process_ms("import aia_ext", 2)  # bytecode written, caches warm
    empty = statistics.median(_process_ms("pass", runs))
    ssl_ms = [v - empty for v in _process_ms("import ssl", runs)]
    ours = [v - empty for v in _process_ms("import aia_ext", runs)]
    injected = [v - empty for v in _process_ms("import aia_ext; aia_ext.inject_into_ssl()",
                                                runs)]
    plain = statistics.median(ssl_ms)
    median, inject = statistics.median(ours), statistics.median(injected)
    ratio = median / plain
    return [
        Result("import_time", "import aia_ext / import ssl, fresh processes, each above "
               "`python -c pass`", ratio, "x", "<= 1.5", ratio <= 1.5,
               spread([v / plain for v in ours]),
               {"import_aia_ext_ms": median, "import_ssl_ms": plain}),
        # Reported, no target: the hook pays it at the first `import ssl`, and the
        # fallback imports its verifier there on purpose (a broken install is
        # found once, at injection: issue 26, item 11).
        Result("inject_time", "import aia_ext + inject_into_ssl(), above `import ssl`",
               inject - plain, "ms", "report", None,
               spread([v - plain for v in injected]), {"import_ssl_ms": plain}),
    ]


def startup_hook(servers: Servers, settings: Settings) -> Result:
    """``python -c pass`` with AIA_EXT_INJECT=1 / without it, interleaved (issue 31,
    item 3: the hook waits for the first import of ssl)."""
    import sysconfig

    hook = os.path.join(sysconfig.get_paths()["purelib"], "aia_ext-inject.pth")
    if not os.path.exists(hook):
        return Result("startup_hook", "python -c pass, AIA_EXT_INJECT=1 / unset", None, "x",
                      "<= 1.10", None, skipped="the wheel's .pth is not installed here")
    ratios, base, hooked = _ratio_rounds(
        settings, lambda: statistics.median(_process_ms("pass", 5)),
        lambda: statistics.median(_process_ms("pass", 5, AIA_EXT_INJECT="1")))
    median = statistics.median(ratios)
    return Result("startup_hook", "python -c pass, AIA_EXT_INJECT=1 / unset", median, "x",
                  "<= 1.10", median <= 1.10, spread(ratios),
                  {"unset_ms": statistics.median(base), "set_ms": statistics.median(hooked)})


def adapter_cost(servers: Servers, settings: Settings) -> Result:
    """aia_ext.requests.AIAAdapter() / requests' HTTPAdapter(), after the first (issue 31,
    item 6: each adapter loaded the system trust store)."""
    try:
        from requests.adapters import HTTPAdapter

        from aia_ext.requests import AIAAdapter
    except ImportError as exc:
        return Result("adapter_cost", "AIAAdapter() / HTTPAdapter()", None, "x", "<= 2", None,
                      skipped=f"requests is not installed: {exc}")
    AIAAdapter()  # the first makes the shared default context

    def per_adapter(make: Callable[[], Any]) -> float:
        started = time.perf_counter()
        for _ in range(200):
            make()
        return (time.perf_counter() - started) / 200 * 1000

    ratios, base, ours = _ratio_rounds(settings, lambda: per_adapter(HTTPAdapter),
                                       lambda: per_adapter(AIAAdapter))
    median = statistics.median(ratios)
    return Result("adapter_cost", "AIAAdapter() / HTTPAdapter(), after the first", median,
                  "x", "<= 2", median <= 2, spread(ratios),
                  {"http_adapter_ms": statistics.median(base),
                   "aia_adapter_ms": statistics.median(ours)})


async def _request(how: str, ctx: ssl.SSLContext, port: int) -> None:
    """One HTTPS request to the local leaf-only server, through ``how``."""
    url = f"https://localhost:{port}/"
    if how == "plain":  # aia_ext's context, used as ssl=ctx: the fetch blocks the loop
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       server_hostname="localhost")
    elif how == "streams":
        import aia_ext.asyncio

        reader, writer = await aia_ext.asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    elif how == "aiohttp":
        import aiohttp

        from aia_ext.aiohttp import AIAConnector

        async with aiohttp.ClientSession(connector=AIAConnector(ssl=ctx)) as session:
            async with session.get(url) as response:
                await response.read()
        return
    else:
        import httpx

        from aia_ext.httpx import AsyncAIATransport

        async with httpx.AsyncClient(transport=AsyncAIATransport(verify=ctx)) as client:
            await client.get(url)
        return
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    await reader.read()
    writer.close()


async def _lag_during(how: str, ctx: ssl.SSLContext, port: int) -> tuple[float, float]:
    """(the longest event-loop stall, the request's time), both in ms."""
    longest = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal longest
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            longest = max(longest, time.perf_counter() - started - 0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await _request(how, ctx, port)
    elapsed = time.perf_counter() - started
    done.set()
    await task
    return longest * 1000, elapsed * 1000


#: The integrations measured by loop_block (issue 22).
INTEGRATIONS = ("aiohttp", "httpx", "streams")
#: How long the slow caIssuers URL takes to answer: issue 22's measurement (1 s).
AIA_LATENCY_MS = 1000.0


def loop_block(servers: Servers, settings: Settings) -> list[Result]:
    """The longest event-loop stall during a cold first request (AIA answers after
    AIA_LATENCY_MS), through ssl=ctx and through each integration; and what the first
    request costs beyond a blocking fetch's, in handshakes."""
    port = servers.port("leaf_only_slow")
    ctx = aia_ext.create_default_context(cafile=servers.root)
    # The clients' own import time is not a stall of the integration's making.
    for module in ("aiohttp", "httpx", "aia_ext.aiohttp", "aia_ext.asyncio", "aia_ext.httpx"):
        importlib.import_module(module)

    cold: dict[str, list[tuple[float, float]]] = {how: [] for how in ("plain", *INTEGRATIONS)}
    warm: dict[str, list[tuple[float, float]]] = {how: [] for how in cold}
    for _ in range(settings.rounds):
        for how in cold:
            aia_ext.clear_cache()
            cold[how].append(asyncio.run(_lag_during(how, ctx, port)))
            warm[how].append(asyncio.run(_lag_during(how, ctx, port)))
    plain_ms = statistics.median(ms for _lag, ms in cold["plain"])
    plain_lags = [lag for lag, _ms in cold["plain"]]
    results = [Result("loop_block", f"ssl=ctx: longest event-loop stall, cold fetch with "
                      f"{AIA_LATENCY_MS:.0f} ms AIA latency", statistics.median(plain_lags),
                      "ms", "report", None, spread(plain_lags),
                      {"first_request_ms": plain_ms})]
    for how in INTEGRATIONS:
        lags = [lag for lag, _ms in cold[how]]
        first_ms = statistics.median(ms for _lag, ms in cold[how])
        # A request the cache completes: its time, and the lag a handshake causes alone.
        handshake_ms = statistics.median(ms for _lag, ms in warm[how])
        warm_lag = statistics.median(lag for lag, _ms in warm[how])
        extra = (first_ms - plain_ms) / handshake_ms
        lag = statistics.median(lags)
        results.append(Result(
            f"loop_block_{how}", f"{how} integration: longest event-loop stall, cold fetch",
            lag, "ms", "<= 5", lag <= 5, spread(lags),
            {"warm_lag_ms": warm_lag, "first_request_ms": first_ms,
             "extra_ms": first_ms - plain_ms, "warm_request_ms": handshake_ms,
             "extra_vs_blocking_in_requests": extra,
             "extra_target": "<= 1 (met)" if extra <= 1 else "<= 1 (MISSED)"}))
    return results


BENCHMARKS: list[tuple[str, Callable[[Servers, Settings], Result | list[Result]]]] = [
    ("full_overhead", full_overhead),
    ("warm_incomplete", warm_incomplete),
    ("pool_2000", pool_2000),
    ("ccadb_load", ccadb_load),
    ("learned_memory", learned_memory),
    ("cold_first_request", cold_first_request),
    ("vs_aia_chaser", lambda s, t: _versus("vs_aia_chaser", "aia_chaser", "aia_chaser", s, t,
                                           "leaf_only")),
    ("vs_aia", lambda s, t: _versus("vs_aia", "aia", "aia", s, t, "leaf_only_443")),
    ("concurrency", concurrency),
    ("memory", memory),
    ("import_time", import_time),
    ("startup_hook", startup_hook),
    ("adapter_cost", adapter_cost),
    ("loop_block", loop_block),
]


def _format(result: Result) -> list[str]:
    if result.skipped:
        return [result.name, "skipped", "", result.target, result.skipped]
    value = f"{result.value:.3f}" if result.unit == "x" else f"{result.value:.1f}"
    value += f" {result.unit}" if result.unit != "x" else ""
    if result.spread:
        low, high = result.spread["min"], result.spread["max"]
        ranges = f"{low:.3f}..{high:.3f}" if result.unit == "x" else f"{low:.1f}..{high:.1f}"
    else:
        ranges = ""
    status = {True: "met", False: "MISSED", None: "-"}[result.met]
    notes = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in result.details.items())
    return [result.name, value, ranges, f"{result.target} ({status})", notes]


def table(results: list[Result]) -> str:
    rows = [["name", "median", "spread", "target", "details"]] + [_format(r) for r in results]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("---" for _ in rows[0]) + "|")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 2 minutes")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--only", nargs="*", help="run only these benchmarks")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    results: list[Result] = []
    with Servers(aia_latency_ms=AIA_LATENCY_MS) as servers:
        for name, bench in BENCHMARKS:
            if args.only and name not in args.only:
                continue
            produced = bench(servers, settings)
            results.extend(produced if isinstance(produced, list) else [produced])
            print(f"  {name}: done", file=sys.stderr, flush=True)
    info = machine()
    # Which engine ran matters more than any other figure: the fallback verifies in Python
    # with cryptography, the native engine inside OpenSSL (docs/engines.md).
    info["engine"] = aia_ext.engine_of(aia_ext.create_default_context())
    print(f"aia_ext {aia_ext.__version__} ({info['engine']} engine) on "
          f"{info['implementation']} {info['python']}, "
          f"{info['openssl']}, {info['cpu']} x{info['cpus']} ({info['platform']})")
    engine_env = "AIA_EXT_ENGINE=fallback " if info["engine"] == "fallback" else ""
    print(f"command: {engine_env}python benchmarks/run.py{' --quick' if args.quick else ''}")
    print()
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "quick": args.quick, "settings": asdict(settings),
                       "results": [asdict(r) for r in results]}, f, indent=2)
    missed = [r.name for r in results if r.met is False]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
