"""Time to the first verified HTTP response on a leaf-only server, in a fresh process.

    SSL_CERT_FILE=root.pem python benchmarks/competitors.py TOOL URL

TOOL is aia_ext, aia_chaser or aia.  The clock starts before the tool is
imported, because "cold" includes what each tool loads (aia_ext imports its
fetch path lazily, on the first missing issuer), and stops when the response
body has arrived.  Prints {"ms": total, "import_ms": ..., "body": ...}.
Every tool trusts only root.pem (via SSL_CERT_FILE) and starts with no cache.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request


def run(tool: str, url: str) -> None:
    started = time.perf_counter()
    if tool == "aia_ext":
        import aia_ext

        imported = time.perf_counter()
        ctx = aia_ext.create_default_context()
        body = urllib.request.urlopen(url, context=ctx, timeout=30).read()
    elif tool == "aia_chaser":
        from aia_chaser import AiaChaser

        imported = time.perf_counter()
        ctx = AiaChaser().make_ssl_context_for_url(url)
        body = urllib.request.urlopen(url, context=ctx, timeout=30).read()
    elif tool == "aia":
        import aia

        imported = time.perf_counter()
        body = aia.AIASession().urlopen(url, timeout=30).read()
    else:
        raise SystemExit(f"unknown tool {tool}")
    done = time.perf_counter()
    print(json.dumps({"ms": (done - started) * 1000, "import_ms": (imported - started) * 1000,
                      "body": body.decode("ascii", "replace")}))


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
