"""The engine interface: what every engine does, and the records it answers with.

An engine is one way of completing a chain inside verification:

- ``native``: the C verify callback on the interpreter's own OpenSSL;
- ``fallback``: OpenSSL's verification off underneath, cryptography's
  verifier after the handshake (interpreters whose OpenSSL cannot be reached);
- ``pyopenssl``: a verify callback through pyOpenSSL's own API.

The public functions, ``report()``, ``diagnose()`` and ``prefetch()`` talk to
engines only through this interface; engines/__init__.py decides which one
applies.  docs/design.md ("The engine seam") explains the choice.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any, Literal


if TYPE_CHECKING:
    import datetime
    from typing import Protocol

    from ..options import Options

if TYPE_CHECKING:
    EngineName = Literal["native", "fallback", "pyopenssl"]


# Plain classes, not NamedTuples or dataclasses: they are built at every
# `import aia_ext`, and typing.NamedTuple costs milliseconds there.
class ConnectionChase:
    """What an engine knows about one connection's verification."""

    __slots__ = ("chase_id", "verified_chain")

    def __init__(self, chase_id: int, verified_chain: tuple[bytes, ...]) -> None:
        self.chase_id = chase_id  # 0: the chain was complete, nothing was chased
        self.verified_chain = verified_chain  # DER, leaf first; () where unknown


class OfflineResult:
    """The outcome of verifying a recorded chain without a handshake (``diagnose()``)."""

    __slots__ = ("chain", "chase_id", "code", "depth", "ok")

    def __init__(self, ok: bool, code: int, depth: int, chain: tuple[bytes, ...],
                 chase_id: int) -> None:
        self.ok = ok
        self.code = code  # OpenSSL's verify code, 0 when ok
        self.depth = depth  # where the verdict was reached
        self.chain = chain  # the verified chain (DER, leaf first), () when not ok
        self.chase_id = chase_id  # 0 when nothing was chased


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here (an engine's dependency probe)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


if TYPE_CHECKING:
    # The interface is a static contract: nothing checks it at run time
    # (tests/test_engines.py does, once), and building a Protocol class costs
    # import time on every program that imports aia_ext.
    class Engine(Protocol):
        """What every engine implements."""

        #: The name ``engine_of()`` reports and ``AIA_EXT_ENGINE`` selects.
        name: EngineName
        #: True when the engine verifies in the context's own sockets, so a plain
        #: standard context must first become an ``aia_ext.SSLContext``.
        needs_context_class: bool

        def available(self) -> bool:
            """Whether this engine can work in this interpreter."""

        def enable(self, context: Any, options: Options) -> None:
            """Install (or re-configure) AIA chasing on ``context``."""

        def disable(self, context: Any) -> bool:
            """Remove it; False when this engine had not enabled ``context``."""

        def is_enabled(self, context: Any) -> bool:
            """Whether this engine chases on ``context``."""

        def options_of(self, context: Any) -> Options | None:
            """The options in force on ``context`` (None when not enabled here)."""

        def chase_of(self, conn: object) -> ConnectionChase | None:
            """The chase of a connection this engine verified (None: not this engine's)."""

        def verify_offline(self, context: Any, ders: list[bytes], hostname: str | None,
                           at: datetime.datetime | None) -> OfflineResult:
            """Verify ``ders`` (served chain, leaf first) as a handshake on ``context`` would."""
