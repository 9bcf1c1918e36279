"""Handshakes that drive every path of the C callback, for leak checking.

Used by benchmarks/valgrind.sh (memcheck).  Each round makes handshakes that:
succeed after a cold fetch (fresh URL each time), succeed from the cache, fail
after fetching (issuer chains to an untrusted root), fail with a
non-missing-issuer error (hostname), and never reach Python (complete chain);
then two diagnose() calls (served chain read from the SSL; offline
verification that fails after fetching).

    python benchmarks/leak_workload.py [ROUNDS]
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import tempfile

import aia_ext
import aia_ext.diagnosis
from aia_ext._private.testing import AIAServer, TLSServer, issue, write_pem


def handshake(ctx: ssl.SSLContext, srv: TLSServer, hostname: str = "localhost") -> int:
    try:
        with socket.create_connection(srv.address, timeout=30) as raw:
            ctx.wrap_socket(raw, server_hostname=hostname).close()
    except ssl.SSLCertVerificationError as exc:
        return int(exc.verify_code)
    return 0


def main(rounds: int) -> int:
    with AIAServer() as aia, tempfile.TemporaryDirectory() as tmp:
        root = issue("Leak Root", ca=True)
        stranger = issue("Untrusted Root", ca=True)
        inter = issue("Leak Intermediate", root, ca=True)
        bad_inter = issue("Dangling Intermediate", stranger, ca=True)
        root_file = write_pem(os.path.join(tmp, "root.pem"), root)
        aia.serve("/bad.der", bad_inter.der)
        bad_leaf = issue("localhost", bad_inter, aia=[aia.url("/bad.der")], dns=["localhost"])
        cold_leaves = []
        for i in range(rounds):
            url = aia.serve(f"/cold/{i}.der", inter.der)
            cold_leaves.append(issue("localhost", inter, aia=[url], dns=["localhost"]))
        warm_leaf = issue("localhost", inter, aia=[aia.serve("/warm.der", inter.der)],
                          dns=["localhost"])
        ctx = aia_ext.create_default_context(cafile=root_file)
        servers = [TLSServer(leaf).__enter__() for leaf in cold_leaves]
        with TLSServer(warm_leaf) as warm, TLSServer(bad_leaf) as bad, \
                TLSServer(warm_leaf, [inter]) as complete:
            codes = []
            for srv in servers:
                codes.append(handshake(ctx, srv))            # cold fetch, success
                codes.append(handshake(ctx, warm))           # cache hit, success
                codes.append(handshake(ctx, bad))            # fetched, still no path: 20
                codes.append(handshake(ctx, warm, "wrong"))  # completed, hostname: 62
                codes.append(handshake(ctx, complete))       # fast path
                # diagnose(): the served chain read back from the SSL, then the
                # offline verification (its X509_STORE_CTX built and freed).
                online = aia_ext.diagnosis.diagnose(f"localhost:{warm.port}", cafile=root_file)
                offline = aia_ext.diagnosis.diagnose(bad_leaf.pem, cafile=root_file)
                codes.append(online.verify_code + offline.verify_code)  # 0 + 20
                srv.close()
        expected = [0, 0, 20, 62, 0, 20] * rounds
        print(f"{len(codes)} handshakes, {aia.total_hits} AIA requests")
        return 0 if codes == expected else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
