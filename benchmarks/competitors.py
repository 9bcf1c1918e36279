"""Time to the first verified HTTP response on a leaf-only server, in a fresh process.

    SSL_CERT_FILE=root.pem python benchmarks/competitors.py TOOL URL

TOOL is aia_ext, aia_chaser or aia.  Imports happen before the clock starts
(import cost is measured separately); everything a user does after importing,
context creation included, is inside it.  Prints {"ms": ..., "body": ...}.
Every tool trusts only root.pem (via SSL_CERT_FILE) and starts cold.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request


def run(tool: str, url: str) -> bytes:
    if tool == "aia_ext":
        import aia_ext

        started = time.perf_counter()
        ctx = aia_ext.create_default_context()
        body = urllib.request.urlopen(url, context=ctx, timeout=30).read()
    elif tool == "aia_chaser":
        from aia_chaser import AiaChaser

        started = time.perf_counter()
        ctx = AiaChaser().make_ssl_context_for_url(url)
        body = urllib.request.urlopen(url, context=ctx, timeout=30).read()
    elif tool == "aia":
        import aia

        started = time.perf_counter()
        body = aia.AIASession().urlopen(url, timeout=30).read()
    else:
        raise SystemExit(f"unknown tool {tool}")
    elapsed = (time.perf_counter() - started) * 1000
    print(json.dumps({"ms": elapsed, "body": body.decode("ascii", "replace")}))
    return body


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
