"""The benchmark's servers, run in a process of their own (see harness.py).

Builds an ECDSA P-256 PKI (root -> intermediate -> leaf for "localhost"), then
serves on 127.0.0.1:

- ``aia``: HTTP, ``/int.der`` (the intermediate), ``/slow/int.der`` (the same
  after ``--aia-latency-ms``), and ``/_hits`` (request counts, as JSON);
- ``full``: TLS, leaf + intermediate (a complete chain);
- ``leaf_only``: TLS, leaf only, caIssuers -> /int.der;
- ``leaf_only_slow``: TLS, leaf only, caIssuers -> /slow/int.der;
- ``leaf_only_443``: like leaf_only on port 443, when this process may bind it
  (the ``aia`` package connects to port 443 only);
- ``pool.pem`` in DIR: 1,999 decoy CA certificates, then the intermediate.

It writes ``root.pem`` into DIR, prints one JSON line describing all this, and
serves until its standard input closes.

    python benchmarks/servers.py DIR [--aia-latency-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

from aia_ext._private.testing import AIAServer, Route, TLSServer, issue, new_key, write_pem


def _bind_443_possible() -> bool:
    try:
        with socket.create_server(("127.0.0.1", 443)):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--aia-latency-ms", type=float, default=50.0)
    args = parser.parse_args()

    with AIAServer() as aia:
        root = issue("Benchmark Root", ca=True)
        inter = issue("Benchmark Intermediate", root, ca=True)
        aia.serve("/int.der", inter.der)
        latency = args.aia_latency_ms / 1000

        def slow(handler):  # type: ignore[no-untyped-def]
            time.sleep(latency)
            body = inter.der
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

        aia.routes["/slow/int.der"] = Route(handler=slow)

        def hits(handler):  # type: ignore[no-untyped-def]
            body = json.dumps(dict(aia.hits)).encode()
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

        aia.routes["/_hits"] = Route(handler=hits)
        names = {"dns": ["localhost"], "ips": ["127.0.0.1"]}
        leaf = issue("localhost", inter, aia=[aia.url("/int.der")], **names)  # type: ignore[arg-type]
        slow_leaf = issue("localhost", inter, aia=[aia.url("/slow/int.der")], **names)  # type: ignore[arg-type]
        write_pem(os.path.join(args.dir, "root.pem"), root)
        # An intermediates pool of 2,000 in one PEM file, the one needed last.
        decoy_key = new_key()
        decoys = [issue(f"Pool Decoy CA {i}", root, ca=True, key=decoy_key) for i in range(1999)]
        write_pem(os.path.join(args.dir, "pool.pem"), *decoys, inter)

        servers = {
            "full": TLSServer(leaf, [inter]),
            "leaf_only": TLSServer(leaf),
            "leaf_only_slow": TLSServer(slow_leaf),
        }
        if _bind_443_possible():
            servers["leaf_only_443"] = TLSServer(leaf, port=443)
        for server in servers.values():
            server.__enter__()
        info = {name: server.port for name, server in servers.items()}
        info["aia"] = aia.port
        info["root"] = os.path.join(args.dir, "root.pem")
        info["pool"] = os.path.join(args.dir, "pool.pem")
        print(json.dumps(info), flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin
        for server in servers.values():
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
