"""Throughput of ``aia-ext check`` over a fleet: targets per second at -j 1 and -j 32.

    python benchmarks/check_throughput.py [--targets 500] [--json out.json]

A child process serves 500 TLS targets on 127.0.0.1, a quarter each: complete
chain, leaf only (their intermediates behind 5 AIA URLs), root sent, and
untrusted.  ``aia-ext check --targets FILE --jsonl -j N`` runs in a fresh process,
timed from start to exit, once per N; every verdict is checked, and so is the
AIA server: each URL must be fetched exactly once per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter

SERVE = r"""
import json, os, sys
from aia_ext._private.testing import AIAServer, Route, TLSServer, issue, new_key, write_pem
count, directory = int(sys.argv[1]), sys.argv[2]
root = issue("Fleet Root", ca=True)
stranger = issue("Fleet Stranger Root", ca=True)
key = new_key()
with AIAServer() as aia:
    cas = [issue(f"Fleet CA {i}", root, ca=True) for i in range(5)]
    urls = [aia.serve(f"/ca/{i}.der", ca.der) for i, ca in enumerate(cas)]

    def requests(handler):
        body = str(sum(n for path, n in aia.hits.items() if path.startswith("/ca/"))).encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    aia.routes["/_requests"] = Route(handler=requests)
    odd = issue("Fleet Stranger CA", stranger, ca=True)
    servers, kinds = [], []
    for index in range(count):
        kind = ("complete", "leaf-only", "root-sent", "untrusted")[index % 4]
        ca = cas[index % 5]
        url = urls[index % 5]
        if kind == "untrusted":
            leaf = issue("localhost", odd, dns=["localhost"], key=key)
            chain = [odd]
        else:
            leaf = issue("localhost", ca, aia=[url], dns=["localhost"], key=key)
            chain = {"complete": [ca], "leaf-only": [], "root-sent": [ca, root]}[kind]
        servers.append(TLSServer(leaf, chain).__enter__())
        kinds.append(kind)
    write_pem(os.path.join(directory, "root.pem"), root)
    print(json.dumps({"aia": aia.port, "targets": [s.port for s in servers], "kinds": kinds}),
          flush=True)
    sys.stdin.read()
    for server in servers:
        server.close()
"""

EXPECTED = {"complete": "ok", "leaf-only": "incomplete", "root-sent": "ok",
            "untrusted": "invalid"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=500)
    parser.add_argument("--jobs", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="aia-ext-fleet-") as tmp:
        child = subprocess.Popen([sys.executable, "-c", SERVE, str(args.targets), tmp],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdin is not None
        info = json.loads(child.stdout.readline())
        targets = os.path.join(tmp, "targets.txt")
        with open(targets, "w") as f:
            f.writelines(f"localhost:{port}\n" for port in info["targets"])
        kinds = dict(zip((f"localhost:{p}" for p in info["targets"]), info["kinds"]))
        try:
            for jobs in args.jobs:
                before = _aia_requests(info["aia"])
                started = time.perf_counter()
                run = subprocess.run(
                    [sys.executable, "-m", "aia_ext", "check", "--targets", targets, "--jsonl",
                     "-j", str(jobs), "--cafile", os.path.join(tmp, "root.pem")],
                    capture_output=True, text=True, timeout=600)
                elapsed = time.perf_counter() - started
                fetches = _aia_requests(info["aia"]) - before
                records = [json.loads(line) for line in run.stdout.splitlines()]
                wrong = [r["target"] for r in records
                         if r["verdict"] != EXPECTED[kinds[r["target"]]]]
                verdicts = Counter(r["verdict"] for r in records)
                results[f"j{jobs}"] = {
                    "targets_per_s": round(len(records) / elapsed, 1),
                    "seconds": round(elapsed, 2), "targets": len(records),
                    "verdicts": dict(verdicts), "wrong_verdicts": len(wrong),
                    "aia_fetches": fetches, "exit_code": run.returncode}
                print(f"-j {jobs}: {len(records)} targets in {elapsed:.2f} s = "
                      f"{len(records) / elapsed:.1f} targets/s; {fetches} AIA fetches; "
                      f"verdicts {dict(verdicts)}; wrong {len(wrong)}", flush=True)
        finally:
            child.stdin.close()
            child.wait(60)
    fastest = results.get("j32", {}).get("targets_per_s", 0.0)
    ok = all(r["wrong_verdicts"] == 0 and r["aia_fetches"] == 5 and r["targets"] == args.targets
             for r in results.values())
    print(f"target: >= 150 targets/s at -j 32, every AIA URL fetched once per run: "
          f"{'met' if ok and fastest >= 150 else 'MISSED'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def _aia_requests(port: int) -> int:
    """caIssuers requests the AIA server has answered so far."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_requests", timeout=10) as r:
            return int(r.read())
    except OSError:
        return -1


if __name__ == "__main__":
    sys.exit(main())
