"""Issue 25: every Python block of README.md and docs/*.md runs as shown, on both engines.

Each block runs in a fresh interpreter against the lab (``aia_ext.testing.Lab``:
a leaf-only HTTPS server, its caIssuers URL, a private root), with the docs'
placeholders replaced by the lab's: example.com by its host and port, the
root and intermediate file names by its files.  The lab's root is the
interpreter's default trust store (``SSL_CERT_FILE``), as a user's system
store would hold their CA, so ``aia_ext.create_default_context()`` as written
trusts it.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from aia_ext.testing import Lab

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, int, str]]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for number, match in enumerate(FENCE.finditer(text), 1):
            found.append((document.relative_to(ROOT).as_posix(), number, match.group(1)))
    return found


BLOCKS = _blocks()
IMPORTS = re.compile(r"^\s*(?:from|import)\s+(\w+)", re.M)
OPTIONAL = {"aiohttp", "httpx", "requests", "urllib3", "OpenSSL", "websockets"}


def _for_the_lab(code: str, lab: Lab) -> str:
    replacements = [
        ("https://example.com/", lab.url),
        ('("example.com", 443)', f'("localhost", {lab.port})'),
        ('"example.com", 443', f'"localhost", {lab.port}'),
        ('server_hostname="example.com"', 'server_hostname="localhost"'),
        ('"internal-root.pem"', repr(lab.root_file)),
        ('"root.pem"', repr(lab.root_file)),
        ('"corp-issuing-ca.pem"', repr(lab.intermediate_file)),
    ]
    for placeholder, value in replacements:
        code = code.replace(placeholder, value)
    return code


def test_the_docs_have_python_blocks():
    assert len(BLOCKS) >= 10
    assert any(path == "README.md" for path, _n, _code in BLOCKS)


@pytest.mark.parametrize("path, number, code", BLOCKS,
                         ids=[f"{p}#{n}" for p, n, _c in BLOCKS])
def test_each_python_block_runs_as_shown(path, number, code, engine, tmp_path):
    # The optional clients a block uses must be installed in this interpreter
    # (PyPy and the emulated rows may lack one); everything else must run.
    for module in sorted(set(IMPORTS.findall(code)) & OPTIONAL):
        pytest.importorskip(module)
    with Lab(tmp_path / "lab") as lab:
        script = tmp_path / "block.py"
        script.write_text(_for_the_lab(code, lab), encoding="utf-8")
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
               and k not in ("SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                             "AIA_EXT_INJECT", "AIA_EXT_CACHE_DIR")}
        env["SSL_CERT_FILE"] = lab.root_file
        if engine != "auto":
            env["AIA_EXT_ENGINE"] = engine
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, f"{path}, block {number}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr


# ---- what the docs name besides Python: extras and command lines ---------------------

def _documents_text() -> str:
    return "\n".join(d.read_text(encoding="utf-8") for d in [*DOCUMENTS, ROOT / "CHANGELOG.md"])


@pytest.mark.engine_agnostic
def test_every_extra_the_docs_name_is_declared():
    """`pip install aia-ext[requests]` must not warn that the extra does not exist."""
    from importlib.metadata import metadata

    declared = set(metadata("aia-ext").get_all("Provides-Extra") or [])
    named = set(re.findall(r"aia-ext\[([a-z0-9,-]+)\]", _documents_text()))
    named = {extra for group in named for extra in group.split(",")}
    assert named and named <= declared, sorted(named - declared)


@pytest.mark.engine_agnostic
@pytest.mark.parametrize("command", ["check", "demo", "intermediates update"])
def test_every_option_the_docs_give_a_command_exists(command):
    """Each ``aia-ext COMMAND --option`` written in the docs is one its --help lists."""
    text = _documents_text()
    used = set()
    for line in re.findall(rf"aia-ext {command}\b[^\n`]*", text):
        used.update(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", line))
    result = subprocess.run([sys.executable, "-m", "aia_ext", *command.split(), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", result.stdout))
    assert used <= listed, sorted(used - listed)
