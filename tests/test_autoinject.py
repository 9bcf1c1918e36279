"""One-step activation: AIA_EXT_INJECT=1 and the .pth hook the wheel installs.

Real interpreters are started for each case; the hook is the installed one where
the wheel installed it (CI), else the source file in a site directory of the test's.
"""

from __future__ import annotations

import pathlib
import time

import pytest

from .helpers import HOOK_SOURCE as SOURCE
from .helpers import run_python as _python


@pytest.mark.engine_agnostic
def test_unset_the_hook_imports_nothing(tmp_path):
    result = _python("import sys; print('ssl' in sys.modules, 'aia_ext' in sys.modules)",
                     tmp_path)
    assert result.stdout.split() == ["False", "False"], result.stderr


@pytest.mark.engine_agnostic
@pytest.mark.parametrize("value", ["", "0"])
def test_off_values_import_nothing(value, tmp_path):
    result = _python("import sys; print('aia_ext' in sys.modules)", tmp_path,
                     AIA_EXT_INJECT=value)
    assert result.stdout.strip() == "False", result.stderr


def test_set_it_injects_before_any_code_runs(tmp_path, engine):
    result = _python("import aia_ext, ssl; ctx = ssl.create_default_context(); "
                     "print(aia_ext.is_injected(), aia_ext.is_enabled(ctx))",
                     tmp_path, AIA_EXT_INJECT="1")
    assert result.stdout.split() == ["True", "True"], result.stderr
    assert result.stderr == ""


@pytest.mark.engine_agnostic
def test_set_a_process_that_never_imports_ssl_loads_neither(tmp_path):
    """Issue 31, item 3: injection waits for the first import of ssl."""
    result = _python("import sys, json; print('ssl' in sys.modules, 'aia_ext' in sys.modules)",
                     tmp_path, AIA_EXT_INJECT="1")
    assert result.stdout.split() == ["False", "False"], result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("first", ["import ssl", "from ssl import create_default_context",
                                   "import urllib.request", "import http.client",
                                   "__import__('ssl')", "import importlib; "
                                   "importlib.import_module('ssl')"])
def test_set_the_first_import_of_ssl_injects_before_any_context(first, tmp_path, engine):
    """However ssl is first imported, aia_ext is in force before the importer makes a
    context, without the program importing aia_ext."""
    result = _python(f"{first}\nimport ssl, sys\nctx = ssl.create_default_context()\n"
                     "print('aia_ext' in sys.modules, sys.modules['aia_ext'].is_enabled(ctx))",
                     tmp_path, AIA_EXT_INJECT="1")
    assert result.stdout.split() == ["True", "True"], result.stderr
    assert result.stderr == ""


@pytest.mark.engine_agnostic
def test_a_failed_injection_is_one_line_not_a_failed_start(tmp_path):
    result = _python("import ssl; print('started')", tmp_path, AIA_EXT_INJECT="1",
                     AIA_EXT_ENGINE="bogus")
    assert result.returncode == 0 and result.stdout.strip() == "started"
    assert result.stderr.count("\n") == 1
    assert "AIA_EXT_INJECT is set, but injection failed: AIA_EXT_ENGINE" in result.stderr


@pytest.mark.engine_agnostic
def test_the_hook_costs_under_a_millisecond(monkeypatch):
    monkeypatch.delenv("AIA_EXT_INJECT", raising=False)
    line = SOURCE.read_text().strip()
    namespace: dict[str, object] = {}
    started = time.perf_counter()
    for _ in range(1000):
        exec(line, namespace)  # what site does with the .pth line, AIA_EXT_INJECT unset
    per_start = (time.perf_counter() - started) / 1000
    assert per_start < 0.001, per_start


@pytest.mark.engine_agnostic
@pytest.mark.parametrize("value", ["false", "no", "off", "OFF", " 0 ", "00", "n"])
def test_false_spellings_do_not_inject(value, tmp_path):
    """Issue 26, item 12: only unset, empty and "0" turned injection off."""
    result = _python("import sys; m = sys.modules.get('aia_ext'); "
                     "print(m.is_injected() if m else 'not imported')", tmp_path,
                     AIA_EXT_INJECT=value)
    assert result.stdout.strip() in ("not imported", "False"), result.stderr
    assert result.stderr == ""


@pytest.mark.engine_agnostic
def test_a_value_not_understood_is_named_and_ignored(tmp_path):
    result = _python("import aia_ext; print(aia_ext.is_injected())", tmp_path,
                     AIA_EXT_INJECT="maybe")
    assert result.stdout.strip() == "False"
    assert result.stderr.strip() == ("aia_ext: AIA_EXT_INJECT='maybe' is not understood "
                                     "(use 1 or 0); not injecting")


def _shadow(tmp_path: pathlib.Path, module: str, text: str) -> str:
    """A directory that makes ``module`` fail to import, as a broken wheel would."""
    directory = tmp_path / f"broken-{module}"
    package = directory / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(text)
    return str(directory)


@pytest.mark.engine_agnostic
@pytest.mark.parametrize("module", ["cryptography", "h11"])
def test_a_broken_dependency_leaves_ssl_alone(module, tmp_path, make_chain, server, root_file):
    """Issue 26, item 11: under the fallback, a dependency that does not import made
    every ssl.create_default_context() raise (pip stopped working).  Now one line on
    stderr, nothing injected, and ssl verifies as it always does."""
    broken = _shadow(tmp_path, module, "raise ImportError('simulated broken wheel')\n")
    chain = make_chain()
    srv = server(chain.leaf, chain.intermediates)
    code = (f"import socket, ssl, aia_ext; ctx = ssl.create_default_context(cafile={root_file!r}); "
            f"raw = socket.create_connection({srv.address!r}); ctx.wrap_socket(raw, "
            "server_hostname='localhost').close(); print(aia_ext.is_injected(), "
            "aia_ext.is_enabled(ctx))")
    result = _python(code, tmp_path, AIA_EXT_INJECT="1", AIA_EXT_ENGINE="fallback",
                     PYTHONPATH=broken)
    assert result.stdout.split() == ["False", "False"], result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("aia_ext: AIA_EXT_INJECT is set, but injection failed: "
                                    "the fallback engine cannot work in this interpreter")
    assert "simulated broken wheel" in result.stderr


@pytest.mark.engine_agnostic
def test_an_aia_ext_that_cannot_import_is_one_line(tmp_path):
    broken = _shadow(tmp_path, "aia_ext", "raise RuntimeError('half-installed')\n")
    result = _python("import ssl; print('started')", tmp_path, AIA_EXT_INJECT="1",
                     PYTHONPATH=broken)
    assert result.returncode == 0 and result.stdout.strip() == "started"
    assert result.stderr == ("aia_ext: AIA_EXT_INJECT is set, but aia_ext cannot be imported: "
                             "RuntimeError: half-installed\n")
