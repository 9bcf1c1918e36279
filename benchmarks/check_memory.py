"""Peak memory of ``aia-ext check`` over a large batch (issue 26, item 13).

    python benchmarks/check_memory.py [--lines 100000] [--real-every 50]

A child process serves TLS targets on 127.0.0.1 (check_throughput.py's fleet:
complete, leaf-only, root-sent and untrusted chains).  The batch has
``--lines`` lines read from stdin, one in ``--real-every`` a real server, the
rest input errors (unparsable targets), as a fleet list with stale lines has.
``aia-ext check --targets - --jsonl -j 32`` runs in a fresh process; its peak
resident set (VmHWM) is read when it ends.  Goal: under 100 MiB, whatever the
batch's length (results are written as they come, in input order).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter

from check_throughput import SERVE

RUN = (
    "import sys; from aia_ext._private.cli import main; "
    "status = main(sys.argv[1:]); "
    "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
    "sys.stderr.write('VmHWM %d\\n' % int(peak.split()[1])); sys.exit(status)"
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--real-every", type=int, default=50)
    parser.add_argument("--servers", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aia-ext-memory-") as tmp:
        child = subprocess.Popen([sys.executable, "-c", SERVE, str(args.servers), tmp],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdin is not None
        info = json.loads(child.stdout.readline())
        ports = info["targets"]
        lines = [f"localhost:{ports[(i // args.real_every) % len(ports)]}\n"
                 if i % args.real_every == 0 else f"not a target {i}!\n"
                 for i in range(args.lines)]
        try:
            started = time.perf_counter()
            run = subprocess.run(
                [sys.executable, "-c", RUN, "check", "--targets", "-", "--jsonl", "-j", "32",
                 "--cafile", os.path.join(tmp, "root.pem")],
                input="".join(lines), capture_output=True, text=True, timeout=3600)
            elapsed = time.perf_counter() - started
        finally:
            child.stdin.close()
            child.wait(60)
    records = [json.loads(line) for line in run.stdout.splitlines()]
    peak_kib = int(run.stderr.rsplit("VmHWM", 1)[1].split()[0])
    verdicts = Counter(r["verdict"] for r in records)
    in_order = [r["target"] for r in records] == [line.strip() for line in lines]
    print(f"{len(records)} targets ({args.lines // args.real_every} real) in {elapsed:.1f} s; "
          f"peak RSS {peak_kib / 1024:.1f} MiB; verdicts {dict(verdicts)}; "
          f"output in input order: {in_order}")
    ok = len(records) == args.lines and in_order and peak_kib < 100 * 1024
    print(f"target: under 100 MiB for {args.lines} targets: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
