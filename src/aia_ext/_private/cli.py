"""The ``aia-ext`` command line: ``check`` (diagnosis) and ``demo``.

Exit codes of ``check`` (stable, documented in docs/diagnosis.md):

- 0: verified, and the server sent a complete chain;
- 3: verified only because missing intermediates were fetched: the server is
  misconfigured, and ``--pem`` writes what it should send;
- 1: does not verify, even with AIA;
- 2: usage or input error (unreadable file, not a certificate, bad date,
  unreachable host), reported in one line without a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO

from .errors import AIAError
from .x509_codes import MISSING_ISSUER

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .diagnose import CertificateInfo, Diagnosis

EXIT_COMPLETE, EXIT_INVALID, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
SCHEMA_ID = "https://aia-ext.invalid/schemas/diagnosis-1.json"


class _Usage(Exception):
    pass


def exit_code(diagnosis: Diagnosis) -> int:
    if not diagnosis.verified:
        return EXIT_INVALID
    return EXIT_INCOMPLETE if diagnosis.chain_was_incomplete else EXIT_COMPLETE


def _cert_json(cert: CertificateInfo) -> dict[str, Any]:
    return {"subject": cert.subject, "issuer": cert.issuer, "not_before": cert.not_before,
            "not_after": cert.not_after, "sha256": cert.sha256,
            "ca_issuers": list(cert.ca_issuers)}


def _origins(diagnosis: Diagnosis) -> list[str]:
    """For each verified-chain certificate: served, fetched or trusted."""
    served = {c.sha256 for c in diagnosis.served_chain}
    out = []
    for index, cert in enumerate(diagnosis.verified_chain):
        if index == len(diagnosis.verified_chain) - 1:
            out.append("trusted")
        elif cert.sha256 in served:
            out.append("served")
        else:
            out.append("fetched")
    return out


def to_json(diagnosis: Diagnosis) -> dict[str, Any]:
    """The Diagnosis as the JSON object of schema diagnosis-1 (see diagnosis.schema.json)."""
    verdict = {EXIT_COMPLETE: "complete", EXIT_INCOMPLETE: "incomplete",
               EXIT_INVALID: "invalid"}[exit_code(diagnosis)]
    verified_chain = [dict(_cert_json(c), origin=o)
                      for c, o in zip(diagnosis.verified_chain, _origins(diagnosis))]
    return {
        "$schema": SCHEMA_ID,
        "schema_version": 1,
        "target": diagnosis.target,
        "hostname": diagnosis.hostname,
        "at": diagnosis.at,
        "verdict": verdict,
        "exit_code": exit_code(diagnosis),
        "verified": diagnosis.verified,
        "verify_code": diagnosis.verify_code,
        "verify_message": diagnosis.verify_message,
        "chain_was_incomplete": diagnosis.chain_was_incomplete,
        "served_chain": [_cert_json(c) for c in diagnosis.served_chain],
        "missing": list(diagnosis.missing),
        "fetched": [{"subject": f.subject, "issuer": f.issuer, "url": f.url,
                     "source": f.source, "bytes": f.nbytes, "ms": round(f.elapsed_ms, 3)}
                    for f in diagnosis.added],
        "failed": [{"url": f.url, "for_subject": f.for_subject, "reason": f.reason}
                   for f in diagnosis.failed],
        "verified_chain": verified_chain,
        "fixed_chain_pem": diagnosis.fixed_chain_pem,
    }


def render(diagnosis: Diagnosis, out: TextIO, pem_path: str | None) -> None:
    """The human-readable tree and verdict."""
    say = out.write
    host = f" (hostname {diagnosis.hostname})" if diagnosis.hostname else ""
    when = f" at {diagnosis.at}" if diagnosis.at else ""
    say(f"aia-ext check {diagnosis.target}{host}{when}\n\n")
    fetched_from = {f.subject: f for f in diagnosis.added}
    if diagnosis.verified:
        for depth, (cert, origin) in enumerate(zip(diagnosis.verified_chain,
                                                   _origins(diagnosis))):
            indent = "  " + "   " * depth
            say(f"{indent}[{origin}] {cert.subject}\n")
            source = fetched_from.get(cert.subject)
            if origin == "fetched" and source is not None:
                say(f"{indent}    from {source.url} ({source.source}, {source.nbytes} bytes)\n")
    else:
        for depth, cert in enumerate(diagnosis.served_chain):
            say(f"  {'   ' * depth}[served] {cert.subject}  (issued by {cert.issuer})\n")
        for fetched in diagnosis.added:
            say(f"  [fetched] {fetched.subject}\n      from {fetched.url}\n")
        for failed in diagnosis.failed:
            where = failed.url or failed.for_subject
            say(f"  [no issuer] {where}: {failed.reason}\n")
    say("\n")
    code = exit_code(diagnosis)
    if code == EXIT_COMPLETE:
        say("Verdict: OK, the chain verifies and the server sends all of it.\n")
    elif code == EXIT_INCOMPLETE:
        count = sum(1 for o in _origins(diagnosis) if o == "fetched")
        say(f"Verdict: VERIFIES ONLY WITH AIA: the chain lacks {count} intermediate "
            "certificate(s); a browser would fetch them, Python's ssl fails.\n")
        fix = (f"the fixed chain is written to {pem_path}" if pem_path
               else "--pem FILE writes the fixed chain")
        say(f"Fix: configure the server to send the leaf followed by its intermediates "
            f"({fix}).\n")
    else:
        say(f"Verdict: DOES NOT VERIFY, even with AIA: verify error {diagnosis.verify_code} "
            f"({diagnosis.verify_message}).\n")
        if diagnosis.verify_code in MISSING_ISSUER:
            say("Fix: the issuer could not be found; check the trust store (--cafile) and "
                "the caIssuers URLs above.\n")


def _parse_at(text: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _Usage(f"--at: {text!r} is not an ISO 8601 date and time") from None
    # A date without a zone is taken as UTC, as certificates' times are.
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def _check(args: argparse.Namespace, out: TextIO) -> int:
    from .diagnose import diagnose  # cryptography: only for `check`

    options: dict[str, Any] = {}
    if args.timeout is not None:
        options["timeout"] = args.timeout
        options["deadline"] = max(args.timeout, 10.0)
    at = _parse_at(args.at) if args.at else None
    diagnosis = diagnose(args.target, cafile=args.cafile, capath=args.capath,
                         hostname=args.hostname, at=at, **options)
    if args.pem and diagnosis.fixed_chain_pem is not None:
        try:
            with open(args.pem, "w", encoding="ascii") as f:
                f.write(diagnosis.fixed_chain_pem)
        except OSError as exc:
            raise _Usage(f"--pem: cannot write {args.pem}: {exc.strerror or exc}") from None
    if args.json:
        json.dump(to_json(diagnosis), out, indent=2)
        out.write("\n")
    else:
        render(diagnosis, out, args.pem if diagnosis.fixed_chain_pem is not None else None)
    return exit_code(diagnosis)


def _parser() -> argparse.ArgumentParser:
    from .._version import __version__  # the version module is tiny; kept with --version

    parser = argparse.ArgumentParser(
        prog="aia-ext",
        description="Complete incomplete TLS certificate chains via AIA caIssuers.",
    )
    parser.add_argument("--version", action="version", version=f"aia_ext {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="show an incomplete chain failing, then completed (local)")
    check = commands.add_parser(
        "check", help="diagnose a server's or a certificate's chain",
        description="Diagnose why a chain does or does not verify. Exit codes: 0 verified and "
                    "complete, 3 verified only with fetched intermediates, 1 does not verify, "
                    "2 usage or input error.")
    check.add_argument("target", metavar="TARGET",
                       help="https:// URL, host[:port], or a PEM/DER certificate (bundle) file")
    check.add_argument("--cafile", help="trust these CA certificates instead of the system store")
    check.add_argument("--capath", help="trust this hashed CA directory")
    check.add_argument("--hostname", help="name to verify (default: the target's host)")
    check.add_argument("--at", metavar="ISO-8601", help="verify as of this time (default: now)")
    check.add_argument("--pem", metavar="OUT", help="write the fixed chain (leaf + intermediates)")
    check.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    check.add_argument("--timeout", type=float, help="seconds per AIA fetch (default 5)")
    check.add_argument("-v", "--verbose", action="store_true", help="DEBUG logs on stderr")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo  # the test PKI: only for `demo`

        return run_demo(out)
    if args.command != "check":
        parser.print_help(out)
        return EXIT_USAGE
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    try:
        return _check(args, out)
    except KeyboardInterrupt:
        # Ctrl-C: no verdict (nothing was decided) and no traceback; 128 + SIGINT.
        print("aia-ext: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (_Usage, AIAError, ValueError, OSError) as exc:
        # One line, no traceback (exit code 2).
        print(f"aia-ext: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
