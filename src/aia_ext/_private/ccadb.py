"""CCADB's intermediates report, read as a pool of untrusted intermediates (issue 23).

Firefox preloads every intermediate disclosed to the Common CA Database
(CCADB) so that it never has to fetch one.  The CCADB publishes them as a
CSV report with a PEM column ("All Intermediates with PEM", whose default
address is ``DEFAULT_URL``).  This module

- recognises that CSV among the forms ``intermediates=`` accepts, and reads
  it with the ``csv`` module (quoted fields, embedded newlines, CRLF), each
  PEM field unwrapped from the apostrophes the report puts around it;
- checks every row: a row without one readable certificate, or whose
  certificate does not have the row's SHA-256 fingerprint, makes the whole
  report an error naming the row, so a damaged or poisoned download changes
  nothing;
- writes the pool file ``aia-ext intermediates update`` keeps in a cache
  directory (chase/preloaded.py reads it for every context with that
  ``cache_dir``).

Preloaded certificates are untrusted chain material like any other pool
entry (docs/design.md, invariant 1).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import time

from .bundle import pem_blocks
from .der import ParsedCertificate, parse_certificate
from .errors import AIAError
from .logtext import escape

#: Mozilla's CCADB report of every disclosed intermediate chaining to its roots,
#: with PEM (wiki.mozilla.org/CA/Intermediate_Certificates); generated daily.
DEFAULT_URL = "https://ccadb.my.salesforce-sites.com/mozilla/PublicAllIntermediateCertsWithPEMCSV"
#: Largest report downloaded (the real one is ~10 MiB).
MAX_REPORT_BYTES = 32 * 1024 * 1024
#: The pool file in a cache directory: PEM, one header line first.
POOL_FILE = "ccadb-intermediates.pem"
POOL_MAGIC = b"# aia_ext intermediates pool v1"
#: Rows (certificates) read from one report at most.
MAX_ROWS = 100_000

#: Column names, compared case-folded without spaces around them.
_PEM_COLUMNS = ("pem info", "pem")
_FINGERPRINT_COLUMNS = ("sha-256 fingerprint", "sha256 fingerprint")


class ReportError(AIAError, ValueError):
    """A CCADB report or pool file that cannot be used; nothing was changed."""


def looks_like_report(data: bytes) -> bool:
    """Whether ``data`` starts with a CSV header naming a PEM column."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf")
    first_line = head.split(b"\n", 1)[0].lower()
    return b"," in first_line and b"pem" in first_line and not head.startswith(b"-----")


def certificates_in_report(data: bytes, limit: int = MAX_ROWS) -> list[ParsedCertificate]:
    """Every row's certificate, in order; ReportError naming the first bad row."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReportError(f"the report is not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise ReportError("the report is empty")
        names = [h.strip().lower() for h in header]
        pem_at = next((names.index(c) for c in _PEM_COLUMNS if c in names), None)
        if pem_at is None:
            raise ReportError("the report has no PEM column (expected 'PEM Info')")
        sha_at = next((names.index(c) for c in _FINGERPRINT_COLUMNS if c in names), None)
        certs: list[ParsedCertificate] = []
        for row in reader:
            if not any(field.strip() for field in row):
                continue  # a blank line, as at the end of a file
            if len(certs) >= limit:
                raise ReportError(f"the report has more than {limit} rows")
            certs.append(_row_certificate(row, reader.line_num, pem_at, sha_at))
    except csv.Error as exc:
        raise ReportError(f"the report is not well-formed CSV (line {reader.line_num}: "
                          f"{escape(exc)})") from None
    if not certs:
        raise ReportError("the report holds no certificate")
    return certs


def _row_certificate(row: list[str], line: int, pem_at: int,
                     sha_at: int | None) -> ParsedCertificate:
    if len(row) <= pem_at:
        raise ReportError(f"row ending on line {line}: no PEM field (truncated?)")
    # The report wraps each PEM in apostrophes, so spreadsheets keep it as text.
    pem = row[pem_at].strip().strip("'").strip().encode("ascii", "replace")
    blocks = pem_blocks(pem, 2)
    if len(blocks) != 1:
        raise ReportError(f"row ending on line {line}: the PEM field holds "
                          f"{len(blocks) or 'no'} certificate(s), not one")
    try:
        cert = parse_certificate(blocks[0])
    except ValueError as exc:
        raise ReportError(f"row ending on line {line}: unreadable certificate "
                          f"({escape(exc)})") from None
    if sha_at is not None and len(row) > sha_at and row[sha_at].strip():
        wanted = row[sha_at].replace(":", "").replace(" ", "").strip().lower()
        if hashlib.sha256(cert.der).hexdigest() != wanted:
            raise ReportError(f"row ending on line {line}: the certificate does not have "
                              "the row's SHA-256 fingerprint")
    return cert


# ---- The pool file in a cache directory -----------------------------------------

def pool_file_bytes(certs: list[ParsedCertificate], source: str) -> bytes:
    """The pool file's content: a header line, a comment, then PEM."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [POOL_MAGIC + b"\n",
             f"# from {escape(source, 500)} at {when}, {len(certs)} certificates\n"
             .encode("ascii", "replace")]
    for cert in certs:
        text = base64.encodebytes(cert.der).replace(b"\n", b"")
        body = b"\n".join(text[i:i + 64] for i in range(0, len(text), 64))
        lines.append(b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n")
    return b"".join(lines)
