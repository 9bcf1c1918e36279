"""The ``aia-ext`` command line: ``check`` (diagnosis, one target or a fleet) and ``demo``.

Exit codes of ``check`` (stable, documented in docs/diagnosis.md), from the
verdicts of findings.py: 0 ok, 3 incomplete, 1 invalid, 4 inconclusive, 5
unreachable, 2 usage or input error, 130 interrupted, 141 when the reader of
standard output went away (quietly).  With several targets,
the exit code is the worst target's (error > invalid > unreachable >
inconclusive > incomplete > ok).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import itertools
import json
import logging
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TextIO

from . import findings
from .errors import AIAError, DiagnosisError, TargetUnreachable
from .logtext import escape

if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterator, Sequence

    from .diagnose import CertificateInfo, Diagnosis

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a reader that went away
SCHEMA_VERSION = 2
SCHEMA_ID = f"https://aia-ext.invalid/schemas/diagnosis-{SCHEMA_VERSION}.json"
#: Concurrent checks by default: checking is I/O-bound.
DEFAULT_JOBS = 8
MAX_JOBS = 256


class _Usage(Exception):
    pass


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
    """The Diagnosis as a JSON object of schema diagnosis-2 (diagnosis.schema.json)."""
    verdict = findings.verdict_of(diagnosis)
    verified_chain = [dict(_cert_json(c), origin=o)
                      for c, o in zip(diagnosis.verified_chain, _origins(diagnosis))]
    return {
        "$schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "target": diagnosis.target,
        "hostname": diagnosis.hostname,
        "at": diagnosis.at,
        "verdict": verdict,
        "exit_code": findings.EXIT_CODES[verdict],
        "findings": [findings.to_json(f) for f in findings.findings_of(diagnosis)],
        "verified": diagnosis.verified,
        "verify_code": diagnosis.verify_code,
        "verify_message": diagnosis.verify_message,
        "verify_depth": diagnosis.verify_depth,
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


def error_json(target: str, verdict: str, message: str) -> dict[str, Any]:
    """A target that gave no diagnosis (unreachable, or bad input), as a JSON object."""
    return {"$schema": SCHEMA_ID, "schema_version": SCHEMA_VERSION, "target": target,
            "verdict": verdict, "exit_code": findings.EXIT_CODES[verdict], "error": message,
            "findings": []}


def render(diagnosis: Diagnosis, out: TextIO, pem_path: str | None) -> None:
    """The human-readable tree, verdict and findings (certificate text escaped)."""
    say = out.write
    host = f" (hostname {escape(diagnosis.hostname)})" if diagnosis.hostname else ""
    when = f" at {diagnosis.at}" if diagnosis.at else ""
    say(f"aia-ext check {escape(diagnosis.target)}{host}{when}\n\n")
    fetched_from = {f.subject: f for f in diagnosis.added}
    if diagnosis.verified:
        for depth, (cert, origin) in enumerate(zip(diagnosis.verified_chain,
                                                   _origins(diagnosis))):
            indent = "  " + "   " * depth
            say(f"{indent}[{origin}] {escape(cert.subject)}\n")
            source = fetched_from.get(cert.subject)
            if origin == "fetched" and source is not None:
                where = source.url or source.source
                say(f"{indent}    from {escape(where)} ({source.source}, {source.nbytes} "
                    "bytes)\n")
    else:
        for depth, cert in enumerate(diagnosis.served_chain):
            indent = "  " + "   " * depth
            say(f"{indent}[served] {escape(cert.subject)}  (issued by {escape(cert.issuer)})\n")
        indent = "  " + "   " * len(diagnosis.served_chain)
        for fetched in diagnosis.added:
            say(f"{indent}[fetched] {escape(fetched.subject)}\n{indent}    from "
                f"{escape(fetched.url or fetched.source)}\n")
        for failed in diagnosis.failed:
            where = failed.url or failed.for_subject
            say(f"{indent}[no issuer] {escape(where)}: {escape(failed.reason)}\n")
    say("\n")
    verdict = findings.verdict_of(diagnosis)
    if verdict == "ok":
        say("Verdict: OK, the chain verifies and the server sends all of it.\n")
    elif verdict == "incomplete":
        count = sum(1 for o in _origins(diagnosis) if o == "fetched")
        say(f"Verdict: VERIFIES ONLY WITH AIA: the chain lacks {count} intermediate "
            "certificate(s); a browser would fetch them, Python's ssl fails.\n")
        fix = (f"the fixed chain is written to {pem_path}" if pem_path
               else "--pem FILE writes the fixed chain")
        say(f"Fix: configure the server to send the leaf followed by its intermediates "
            f"({fix}).\n")
    elif verdict == "inconclusive":
        say(f"Verdict: INCONCLUSIVE: does not verify (verify error {diagnosis.verify_code}, "
            f"{diagnosis.verify_message}), and a caIssuers URL could not be fetched, so the "
            "answer could change.\n")
    else:
        say(f"Verdict: DOES NOT VERIFY, even with AIA: verify error {diagnosis.verify_code} "
            f"({diagnosis.verify_message}).\n")
    found = findings.findings_of(diagnosis)
    if found:
        say("\nFindings:\n")
        for finding in found:
            say(findings.render_text(finding))


def _parse_at(text: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _Usage(f"--at: {text!r} is not an ISO 8601 date and time") from None
    # A date without a zone is taken as UTC, as certificates' times are.
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def _check_options(args: argparse.Namespace) -> None:
    """Option errors name the option and the path, before any target is tried."""
    if args.cafile is not None:
        if not os.path.exists(args.cafile):
            raise _Usage(f"--cafile {args.cafile}: no such file")
        if os.path.isdir(args.cafile):
            raise _Usage(f"--cafile {args.cafile}: is a directory (use --capath)")
    if args.capath is not None and not os.path.isdir(args.capath):
        raise _Usage(f"--capath {args.capath}: no such directory")
    for option, path in (("--cert", args.cert), ("--key", args.key)):
        if path is not None and not os.path.isfile(path):
            raise _Usage(f"{option} {path}: no such file")
    if args.key is not None and args.cert is None:
        raise _Usage("--key needs --cert")
    if not 1 <= args.jobs <= MAX_JOBS:
        raise _Usage(f"-j/--jobs must be between 1 and {MAX_JOBS}, got {args.jobs}")
    if args.connect_timeout is not None and not 0 < args.connect_timeout <= 300:
        raise _Usage(f"--connect-timeout must be > 0 and <= 300, got {args.connect_timeout}")


def _context(args: argparse.Namespace) -> ssl.SSLContext:
    """One verifying context for every target of the run."""
    import ssl

    from .api import create_default_context_with
    from .options import make_options

    # Learned intermediates would carry one target's intermediates to the next:
    # each target is checked as a fresh client would check it (issue 32).
    options: dict[str, Any] = {"learn_intermediates": False}
    if args.timeout is not None:
        options["timeout"] = args.timeout
        options["deadline"] = max(args.timeout, 10.0)
    try:
        return create_default_context_with(ssl.Purpose.SERVER_AUTH, args.cafile, args.capath,
                                           None, make_options(options))
    except ssl.SSLError as exc:
        where = f"--cafile {args.cafile}" if args.cafile else f"--capath {args.capath}"
        raise _Usage(f"{where}: no certificate could be loaded ({exc.reason or exc})") from None


def _targets(args: argparse.Namespace) -> Iterator[str]:
    """The targets, as they are read: a file or stdin is never held in memory whole."""
    yield from args.target
    if args.targets is None:
        return
    try:
        stream = sys.stdin if args.targets == "-" else open(args.targets, encoding="utf-8")
    except OSError as exc:
        raise _Usage(f"--targets {args.targets}: {exc.strerror or exc}") from None
    with stream:
        for line in stream:
            text = line.split("#", 1)[0].strip()
            if text:
                yield text


class _Run:
    """One ``aia-ext check`` run: options checked once, targets checked concurrently."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.at = _parse_at(args.at) if args.at else None
        self.context = _context(args)
        self.lock = threading.Lock()
        self.done = 0
        # Imported here, on the main thread, before any worker starts: before
        # 3.9.3 (bpo-43517) concurrent first imports of one module were taken for
        # a circular import ("cannot import name 'diagnose' from partially
        # initialized module", seen on Debian 11's 3.9.2: issue 16).
        from .chase import core  # noqa: F401  # the chase, which workers reach too
        from .chase.cache import fresh
        from .diagnose import diagnose  # cryptography: only for `check`

        self.diagnose = diagnose
        self.fresh_cache = fresh

    def check(self, target: str) -> tuple[str, Diagnosis | None, str]:
        """(verdict, the diagnosis or None, the error message)."""
        diagnose = self.diagnose
        args = self.args
        client = (args.cert, args.key) if args.cert else None
        kwargs: dict[str, Any] = {"hostname": args.hostname, "at": self.at,
                                  "connect_to": args.connect_to, "starttls": args.starttls,
                                  "client_cert": client, "context": self.context}
        if args.connect_timeout is not None:
            kwargs["connect_timeout"] = args.connect_timeout
        try:
            # As a fresh client would see it: nothing another target of the
            # batch fetched, in whatever order or concurrency (issue 32).
            with self.fresh_cache():
                diagnosis = diagnose(target, **kwargs)
        except TargetUnreachable as exc:
            if _names_a_file(target) and "cannot resolve" in str(exc):
                # Meant as a file, surely: an input error, saying both.
                return "error", None, f"{target}: no such file, and not a resolvable host"
            return "unreachable", None, str(exc)
        except (DiagnosisError, ValueError, OSError) as exc:
            return "error", None, str(exc)
        return findings.verdict_of(diagnosis), diagnosis, ""

    def emit_next(self, pending: collections.deque[
            tuple[str, Future[tuple[str, Diagnosis | None, str]]]], worst: str) -> str:
        """Write the oldest target's result (waiting for it); the worst verdict so far."""
        target, future = pending.popleft()
        verdict, diagnosis, error = future.result()
        self.emit(target, verdict, diagnosis, error, batch=True)
        return findings.worst([worst, verdict])

    def emit(self, target: str, verdict: str, diagnosis: Diagnosis | None, error: str,
             batch: bool) -> None:
        args = self.args
        with self.lock:
            self.done += 1
            if args.jsonl or args.json:
                record = (to_json(diagnosis) if diagnosis is not None
                          else error_json(target, verdict, error))
                # dumps, not dump: only dumps uses the C encoder.
                self.out.write(json.dumps(record, indent=None if args.jsonl else 2) + "\n")
            elif not args.quiet:
                if diagnosis is not None:
                    pem = self._write_pem(diagnosis)
                    render(diagnosis, self.out, pem)
                else:
                    label = "UNREACHABLE" if verdict == "unreachable" else "ERROR"
                    self.out.write(f"aia-ext check {escape(target)}\n\nVerdict: {label}: "
                                   f"{escape(error)}\n")
                if batch:
                    self.out.write("\n")
            elif diagnosis is not None:
                self._write_pem(diagnosis)
            self.out.flush()
            if sys.stderr.isatty() and batch:
                sys.stderr.write(f"\r[{self.done}] checked")
                sys.stderr.flush()

    def _write_pem(self, diagnosis: Diagnosis) -> str | None:
        pem = self.args.pem
        if pem is None or diagnosis.fixed_chain_pem is None:
            return None
        if pem == "-":
            sys.stdout.write(diagnosis.fixed_chain_pem)
            return "standard output"
        try:
            with open(pem, "w", encoding="ascii") as f:
                f.write(diagnosis.fixed_chain_pem)
        except OSError as exc:
            raise _Usage(f"--pem {pem}: cannot write: {exc.strerror or exc}") from None
        return str(pem)


def _names_a_file(target: str) -> bool:
    return target.lower().endswith((".pem", ".crt", ".cer", ".der", ".p7b", ".p7c"))


#: Targets in flight per worker: results are written in input order, so a slow
#: target holds back at most this many finished ones (memory stays bounded
#: whatever the batch's size: issue 26, item 13).
WINDOW_PER_JOB = 4


def _check(args: argparse.Namespace, out: TextIO) -> int:
    _check_options(args)
    targets = _targets(args)
    first = list(itertools.islice(targets, 2))
    if not first:
        raise _Usage("no target: give TARGET arguments or --targets FILE")
    if args.pem is not None and len(first) > 1:
        raise _Usage("--pem takes one target")
    run = _Run(args, out)
    if len(first) == 1:
        verdict, diagnosis, error = run.check(first[0])
        if diagnosis is None and not (args.json or args.jsonl):
            # One target, as text: the reason in one line on stderr, no traceback.
            print(f"aia-ext: {verdict}: {escape(error)}", file=sys.stderr)
            return findings.EXIT_CODES[verdict]
        run.emit(first[0], verdict, diagnosis, error, batch=False)
        return findings.EXIT_CODES[verdict]
    worst = "ok"
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    pending: collections.deque[tuple[str, Future[tuple[str, Diagnosis | None, str]]]] = (
        collections.deque())
    finished = False
    try:
        for target in itertools.chain(first, targets):
            if len(pending) >= args.jobs * WINDOW_PER_JOB:
                worst = run.emit_next(pending, worst)
            pending.append((target, pool.submit(run.check, target)))
        while pending:
            worst = run.emit_next(pending, worst)
        finished = True
    finally:
        # On Ctrl-C or a closed pipe, do not wait for checks still running.
        pool.shutdown(wait=finished, cancel_futures=True)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    return findings.EXIT_CODES[worst]


def _lab_problems() -> tuple[str, ...]:
    # Written out, not imported: the lab module needs cryptography, --help must not.
    return ("untrusted-root", "dead-ca-issuers", "slow-ca-issuers", "wrong-name",
            "expired-leaf", "two-missing-levels")


class _Version(argparse.Action):
    """``--version``: the version, and which engine runs here and why (a source install
    without a compiler goes pure with a warning only ``pip install -v`` shows)."""

    def __init__(self, option_strings: list[str], version: str, dest: str = argparse.SUPPRESS,
                 help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)
        self.version = version

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from .engines import describe

        sys.stdout.write(f"{self.version}\nengine: {describe()}\n")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    from .._version import __version__  # the version module is tiny; kept with --version

    parser = argparse.ArgumentParser(
        prog="aia-ext",
        description="Complete incomplete TLS certificate chains via AIA caIssuers.",
    )
    parser.add_argument("--version", action=_Version, version=f"aia_ext {__version__}",
                        help="show the version and the engine contexts get here, and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="show an incomplete chain failing, then completed (local)")
    demo.add_argument("--serve", action="store_true",
                      help="keep a lab running instead: a leaf-only HTTPS server, its "
                           "caIssuers URL and root CA file, until interrupted")
    demo.add_argument("--problem", choices=_lab_problems(), default=None,
                      help="with --serve: break the lab further, to test error handling "
                           "against (docs/usage.md, \"A lab to test against\")")
    demo.add_argument("--dir", help="with --serve: where to write root.pem (default: a new "
                                    "temporary directory, kept)")
    intermediates = commands.add_parser(
        "intermediates", help="the preloaded intermediates pool (CCADB)",
        description="Manage the pool of public intermediates kept in a cache directory.")
    actions = intermediates.add_subparsers(dest="action", metavar="ACTION")
    # `aia-ext intermediates` alone shows what it can do, not the top-level help.
    intermediates.set_defaults(usage_of=intermediates)
    update = actions.add_parser(
        "update", help="download CCADB's intermediates report into the pool",
        description="Download CCADB's report of disclosed intermediates, check every row, "
                    "and replace the pool file in the cache directory atomically. Every "
                    "context whose cache_dir is that directory then tries the pool before "
                    "fetching. The certificates stay untrusted chain material.")
    update.add_argument("--url", default=None,
                        help="the report's address (default: CCADB's "
                             "PublicAllIntermediateCertsWithPEMCSV)")
    update.add_argument("--cache-dir", help="the cache directory (default: AIA_EXT_CACHE_DIR)")
    update.add_argument("--timeout", type=float, default=None,
                        help="seconds the download may take (default 120)")
    update.add_argument("--cafile", default=None,
                        help="CA certificates (PEM) that verify an https --url, instead of "
                             "the system store: a mirror behind a private CA")
    check = commands.add_parser(
        "check", help="diagnose servers' or certificates' chains",
        description="Diagnose why chains do or do not verify, and what their servers should "
                    "send. Exit codes: 0 ok, 3 verifies only with fetched intermediates, "
                    "1 invalid, 4 inconclusive (a caIssuers URL could not be fetched), "
                    "5 unreachable, 2 usage or input error; with several targets, the worst.")
    check.add_argument("target", metavar="TARGET", nargs="*",
                       help="https:// URL, host[:port], or a PEM/DER certificate (bundle) file")
    check.add_argument("--targets", metavar="FILE",
                       help="more targets, one per line ('#' comments; '-' for stdin)")
    check.add_argument("-j", "--jobs", type=int, default=DEFAULT_JOBS,
                       help=f"targets checked at once (default {DEFAULT_JOBS})")
    check.add_argument("--cafile", help="trust these CA certificates instead of the system store")
    check.add_argument("--capath", help="trust this hashed CA directory")
    check.add_argument("--hostname", help="name to verify and send as SNI (default: the "
                                          "target's host)")
    check.add_argument("--connect-to", metavar="HOST[:PORT]",
                       help="connect there, verifying the target's name (SNI and hostname)")
    check.add_argument("--starttls", choices=("smtp", "imap", "pop3"),
                       help="upgrade a plain session first (default ports 25, 143, 110)")
    check.add_argument("--cert", help="client certificate (PEM), for servers that require one")
    check.add_argument("--key", help="the client certificate's key, if not in --cert")
    check.add_argument("--at", metavar="ISO-8601", help="verify as of this time (default: now)")
    check.add_argument("--pem", metavar="OUT",
                       help="write the fixed chain (leaf + intermediates); '-' for stdout")
    output = check.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print each diagnosis as JSON")
    output.add_argument("--jsonl", action="store_true",
                        help="print one JSON object per target per line (diagnosis.schema.json)")
    check.add_argument("--timeout", type=float,
                       help="seconds per AIA fetch (default 5); see --connect-timeout")
    check.add_argument("--connect-timeout", type=float,
                       help="seconds to connect and handshake with each target (default 10)")
    check.add_argument("-q", "--quiet", action="store_true",
                       help="print nothing but JSON output; the exit code tells")
    check.add_argument("-v", "--verbose", action="store_true", help="DEBUG logs on stderr")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo, serve_lab  # the test PKI: only for `demo`

        if args.problem is not None and not args.serve:
            raise _Usage("--problem needs --serve")
        return serve_lab(out, args.dir, args.problem) if args.serve else run_demo(out)
    if args.command == "intermediates" and args.action == "update":
        from . import update  # the CCADB report: only for this command

        return update.run(args.cache_dir, args.url or update.DEFAULT_URL,
                          update.DEFAULT_TIMEOUT if args.timeout is None else args.timeout, out,
                          args.cafile)
    if args.command != "check":
        getattr(args, "usage_of", parser).print_help(sys.stderr)
        return EXIT_USAGE
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    try:
        return _check(args, out)
    except KeyboardInterrupt:
        # Ctrl-C: no verdict (nothing was decided) and no traceback; 128 + SIGINT.
        print("aia-ext: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head -1`): end quietly, as Unix tools do.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (_Usage, AIAError, ValueError, OSError) as exc:
        # One line, no traceback (exit code 2).
        print(f"aia-ext: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
