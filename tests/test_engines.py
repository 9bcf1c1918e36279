"""The engine seam: one place decides, every engine answers the same questions."""

from __future__ import annotations

import ssl
import sys

import pytest

import aia_ext
from aia_ext._private import engines

from .helpers import native_available, verify_code


def test_engine_of_names_the_engine_in_force(engine, root_file):
    ctx = aia_ext.create_default_context(cafile=root_file)
    expected = "fallback" if engine == "fallback" else "native"
    assert aia_ext.engine_of(ctx) == expected
    aia_ext.disable(ctx)
    assert aia_ext.engine_of(ctx) is None and not aia_ext.is_enabled(ctx)


def test_engine_of_a_plain_context_is_none():
    assert aia_ext.engine_of(ssl.create_default_context()) is None


def test_engine_of_refuses_what_is_not_a_context():
    with pytest.raises(TypeError, match=r"expected an ssl\.SSLContext"):
        aia_ext.engine_of(object())  # type: ignore[arg-type]


def test_pyopenssl_contexts_get_the_pyopenssl_engine(root_file):
    # pyOpenSSL is optional: cryptography 51 has no pyOpenSSL release yet.
    SSL = pytest.importorskip("OpenSSL.SSL")

    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    assert aia_ext.engine_of(ctx) is None
    aia_ext.enable(ctx)
    assert aia_ext.engine_of(ctx) == "pyopenssl"
    aia_ext.disable(ctx)
    assert aia_ext.engine_of(ctx) is None


@pytest.mark.parametrize("value", ["turbo", "NATIVE ", "Fallback"])
def test_the_engine_variable_is_read_in_one_place(value, monkeypatch):
    monkeypatch.setenv("AIA_EXT_ENGINE", value)
    if value.strip().lower() == "native" and not native_available():
        with pytest.raises(aia_ext.UnsupportedPlatformError):
            engines.select()
    elif value.strip().lower() in engines.CHOICES:
        assert engines.select().name == value.strip().lower()
    else:
        with pytest.raises(ValueError, match="AIA_EXT_ENGINE must be one of"):
            aia_ext.create_default_context()


def test_every_engine_implements_the_interface():
    for engine in engines.ALL:
        for name in ("name", "needs_context_class"):
            assert hasattr(engine, name), (engine.name, name)
        for method in ("available", "enable", "disable", "is_enabled", "options_of",
                       "chase_of", "verify_offline"):
            assert callable(getattr(engine, method)), (engine.name, method)
    assert {e.name for e in engines.ALL} == {"native", "fallback", "pyopenssl"}


def test_an_enabled_context_keeps_its_engine_when_the_variable_changes(
        engine, make_chain, server, root_file, monkeypatch):
    """for_context() answers with the engine already on a context, not the selection."""
    ctx = aia_ext.create_default_context(cafile=root_file)
    first = aia_ext.engine_of(ctx)
    monkeypatch.setenv("AIA_EXT_ENGINE", "native" if first == "fallback" else "fallback")
    aia_ext.enable(ctx, timeout=2.0)  # new options, same engine
    assert aia_ext.engine_of(ctx) == first
    assert engines.enabled_engine(ctx).options_of(ctx).timeout == 2.0  # type: ignore[union-attr]
    chain = make_chain()
    assert verify_code(ctx, server(chain.leaf)) == 0


def test_a_free_threaded_interpreter_without_its_gil_is_refused(monkeypatch):
    """Issue 16: no free-threaded interpreter could be obtained to prove it safe, so
    enabling without the GIL is refused, clearly.  The interpreter's answer is what
    is replaced here (sys._is_gil_enabled, 3.13+); on a build with the GIL it is True."""
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    with pytest.raises(aia_ext.UnsupportedPlatformError, match="free-threaded"):
        aia_ext.create_default_context()
    with pytest.raises(aia_ext.UnsupportedPlatformError, match="PYTHON_GIL=1"):
        aia_ext.enable(ssl.create_default_context())
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert aia_ext.engine_of(aia_ext.create_default_context()) is not None


# ---- Issue 32, item 7: which engine runs, and why, where users look -------------------

_BLOCK_NATIVE = ("import sys; sys.modules['aia_ext._native'] = None; "
                 "from aia_ext._private.cli import main; sys.exit(main(['--version']))")


@pytest.mark.engine_agnostic
@pytest.mark.parametrize("how", ["auto", "AIA_EXT_ENGINE=fallback", "no native extension",
                                 "AIA_EXT_ENGINE=bogus"])
def test_version_names_the_engine_and_why(how, tmp_path):
    from .helpers import run_python

    env = {"AIA_EXT_ENGINE": how.partition("=")[2]} if "=" in how else {"AIA_EXT_ENGINE": ""}
    code = (_BLOCK_NATIVE if how == "no native extension" else
            "import sys; from aia_ext._private.cli import main; sys.exit(main(['--version']))")
    result = run_python(code, tmp_path, **env)
    assert result.returncode == 0, result.stderr
    version, engine_line = result.stdout.splitlines()
    assert version == f"aia_ext {aia_ext.__version__}"
    if how == "auto" and native_available():
        assert engine_line.startswith(f"engine: native (in the {ssl.OPENSSL_VERSION}")
    elif how == "AIA_EXT_ENGINE=fallback":
        assert engine_line == "engine: fallback (AIA_EXT_ENGINE=fallback)"
    elif how == "no native extension":
        # As a pure wheel, or a source install without a compiler, has it.
        assert engine_line.startswith("engine: fallback (aia_ext was installed without its "
                                      "native extension (the pure wheel, or a source install "
                                      "without a C compiler)")
    elif how == "AIA_EXT_ENGINE=bogus":
        assert engine_line.startswith("engine: none: AIA_EXT_ENGINE must be one of")


@pytest.mark.engine_agnostic
def test_the_demo_names_its_engine(capsys):
    from aia_ext._private.cli import main
    from aia_ext._private.engines import describe

    assert main(["demo"]) == 0
    assert f"  engine:            {describe()}\n" in capsys.readouterr().out


class _Masked(ssl.SSLContext):
    """A subclass whose ``__class__`` is a read-only property, as truststore's is."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return ssl.SSLContext


@pytest.mark.fallback_only  # only the fallback switches a context's class
def test_a_context_that_cannot_change_class_is_refused_clearly(engine, caplog):
    """pip's vendored truststore defines ``__class__`` as a property: under injection with
    the fallback, assigning it raised AttributeError out of pip's own context creation."""
    import logging

    with pytest.raises(aia_ext.UnsupportedPlatformError, match="cannot become"):
        aia_ext.enable(_Masked(ssl.PROTOCOL_TLS_CLIENT))
    aia_ext.inject_into_ssl()
    try:
        with caplog.at_level(logging.WARNING, logger="aia_ext"):
            made = _Masked(ssl.PROTOCOL_TLS_CLIENT)  # made, left to OpenSSL, said once
        assert not aia_ext.is_enabled(made)
        assert "cannot become" in caplog.text
    finally:
        aia_ext.extract_from_ssl()
