"""Options are validated up front, and errors name the option."""

from __future__ import annotations

import pathlib
import ssl

import pytest

import aia_ext
from aia_ext._private.options import Options, make_options

from .helpers import native_available


def test_defaults_match_the_documented_policy():
    o = make_options({})
    assert (o.timeout, o.deadline, o.max_response_bytes, o.max_fetches,
            o.max_urls_per_cert, o.max_redirects) == (5.0, 10.0, 65536, 8, 5, 3)
    assert (o.allow_https, o.allow_private, o.url_filter, o.fetcher) == (False, True, None, None)


@pytest.mark.parametrize("name,value", [
    ("timeout", 0), ("timeout", -1), ("timeout", float("nan")), ("timeout", float("inf")),
    ("timeout", "5"), ("timeout", True), ("deadline", 0), ("deadline", 10_000),
    ("max_response_bytes", 10), ("max_response_bytes", 1.5), ("max_fetches", -1),
    ("max_fetches", 1000), ("max_urls_per_cert", 0), ("max_redirects", 11),
    ("allow_https", 1), ("allow_private", "yes"), ("url_filter", 42), ("fetcher", "x"),
])
def test_bad_values_are_value_errors_naming_the_option(name, value):
    with pytest.raises(ValueError, match=name):
        make_options({name: value})


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="max_fetchs"):
        make_options({"max_fetchs": 3})


def test_enable_and_create_default_context_validate_first(root_file):
    ctx = ssl.create_default_context(cafile=root_file)
    with pytest.raises(ValueError, match="timeout"):
        aia_ext.enable(ctx, timeout=-1)
    assert not aia_ext.is_enabled(ctx)
    with pytest.raises(ValueError, match="deadline"):
        aia_ext.create_default_context(cafile=root_file, deadline=0)


def test_options_are_immutable():
    with pytest.raises(AttributeError):
        Options().timeout = 1  # type: ignore[misc]


def test_error_hierarchy():
    assert issubclass(aia_ext.UnsupportedPlatformError, aia_ext.AIAError)
    assert issubclass(aia_ext.UnsupportedPlatformError, RuntimeError)
    assert issubclass(aia_ext.FetchError, aia_ext.AIAError)


def test_create_default_context_without_ca_arguments():
    ctx = aia_ext.create_default_context()
    assert aia_ext.is_enabled(ctx)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] > 0 or ssl.get_default_verify_paths().capath


def test_create_default_context_falls_back_to_certifi(monkeypatch, tmp_path):
    import certifi

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))
    ctx = aia_ext.create_default_context()
    certifi_count = len(ssl.create_default_context(cafile=certifi.where()).get_ca_certs())
    assert len(ctx.get_ca_certs()) == certifi_count > 0


def test_help_lists_every_option():
    from aia_ext._private.options import NAMES
    from aia_ext.diagnosis import diagnose

    for function in (aia_ext.enable, aia_ext.create_default_context, aia_ext.inject_into_ssl,
                     diagnose):
        assert function.__doc__ is not None
        missing = [name for name in NAMES if f"``{name}``" not in function.__doc__]
        assert not missing, (function.__name__, missing)


def test_reprs_are_short_and_carry_no_der(make_chain, server, root_file):
    from aia_ext.diagnosis import diagnose

    chain = make_chain()
    result = diagnose(chain.leaf.pem, cafile=root_file, hostname="localhost")
    assert result.verified and result.added
    text = repr(result)
    assert "\\x" not in text and "der=" not in text and "fixed_chain_pem" not in text
    assert len(text) < 3000


# ---- Options is still a frozen dataclass to its users (issue 25: built without one) ----

@pytest.mark.engine_agnostic
def test_options_behave_as_a_frozen_dataclass():
    import copy
    import dataclasses
    import pickle

    options = Options(timeout=3.0, max_fetches=2)
    assert dataclasses.is_dataclass(options) and dataclasses.is_dataclass(Options)
    assert [f.name for f in dataclasses.fields(options)][:3] == [
        "timeout", "deadline", "max_response_bytes"]
    assert len(dataclasses.fields(Options)) == 14
    changed = dataclasses.replace(options, deadline=4.0)
    assert type(changed) is Options and (changed.timeout, changed.deadline) == (3.0, 4.0)
    assert dataclasses.asdict(options)["max_fetches"] == 2
    assert options == Options(timeout=3.0, max_fetches=2) != Options()
    assert hash(options) == hash(Options(timeout=3.0, max_fetches=2))
    assert pickle.loads(pickle.dumps(options)) == options == copy.deepcopy(options)
    assert repr(Options()).startswith("Options(timeout=5.0, deadline=10.0, ")
    for mutate in (lambda: setattr(options, "timeout", 1.0),
                   lambda: delattr(options, "timeout"),
                   lambda: setattr(options, "new_field", 1)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            mutate()
    with pytest.raises(TypeError):
        Options(timout=3.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="timout"):
        dataclasses.replace(options, timout=3.0)


@pytest.mark.engine_agnostic
def test_every_list_of_option_names_agrees():
    """The names are written out in five places (the typed keywords that make a typo a
    mypy error, the class, its constructor, the field order and the help text): an
    option added to one and not the others would be silently unreachable or untyped."""
    import ast
    import copy
    import inspect

    from aia_ext._private import options as module
    from aia_ext._private.options import FIELDS, HELP, NAMES

    # OptionsKwargs is the type checker's (typing is kept off `import aia_ext`):
    # its fields are read from the source.
    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    typed = next(node for node in ast.walk(tree)
                 if isinstance(node, ast.ClassDef) and node.name == "OptionsKwargs")
    keywords = [s.target.id for s in typed.body if isinstance(s, ast.AnnAssign)]
    assert len(set(FIELDS)) == len(FIELDS) and set(FIELDS) == NAMES
    assert list(inspect.signature(Options).parameters) == list(FIELDS)
    assert list(Options.__annotations__) == list(FIELDS)
    assert keywords == list(FIELDS)
    assert list(module.OptionsKwargs.__annotations__) == list(FIELDS)  # at run time too
    assert [name for name in FIELDS if f"``{name}``" not in HELP] == []
    if hasattr(copy, "replace"):  # Python 3.13+
        assert copy.replace(Options(), max_fetches=1).max_fetches == 1
        with pytest.raises(TypeError, match="max_fetchs"):
            copy.replace(Options(), max_fetchs=1)


@pytest.mark.engine_agnostic
def test_import_aia_ext_leaves_the_heavy_modules_unloaded():
    """docs/design.md, "Import time": what a plain handshake does not need stays
    unloaded until it is needed (dataclasses and inspect cost ~12 ms of the import)."""
    import subprocess
    import sys

    if not native_available():
        # The fallback imports cryptography and h11 when it enables a context, on
        # purpose: a broken install is found there, not mid-handshake (issue 26, 11).
        pytest.skip("the native engine's import path; this installation has none")
    heavy = ("dataclasses", "inspect", "http.client", "h11", "tempfile", "json", "aiohttp",
             "httpx", "requests", "cryptography", "aia_ext._private.chase.core")
    # Measured beside what the standard modules we need load by themselves (on 3.14
    # `typing` imports inspect and dataclasses' dependencies itself).
    code = ("import sys, ssl, logging, typing; before = set(sys.modules); "
            "import aia_ext; aia_ext.create_default_context(); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules and m not in before))")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("AIA_EXT_INJECT", "AIA_EXT_ENGINE")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.engine_agnostic
def test_import_and_enable_load_neither_logging_nor_typing():
    """Issue 31, item 6: logging (with its handlers' machinery) and typing were most of
    ``import aia_ext``.  Neither is loaded by importing and enabling, and nothing that
    would have been logged is lost: with no logging module loaded, no handler exists."""
    import subprocess
    import sys

    if not native_available():
        pytest.skip("the native engine's import path; the fallback loads cryptography")
    code = ("import sys, ssl; before = set(sys.modules); "
            "import aia_ext; ctx = aia_ext.create_default_context(); aia_ext.disable(ctx); "
            "aia_ext.inject_into_ssl(); aia_ext.extract_from_ssl(); "
            "print(sorted(m for m in ('logging', 'typing') if m in sys.modules "
            "and m not in before))")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("AIA_EXT_INJECT", "AIA_EXT_ENGINE")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert (result.stdout.strip(), result.stderr) == ("[]", "")
