"""``AIA_EXT_INJECT=1``: aia_ext injected when ``ssl`` is first imported, not at start-up.

``aia_ext-inject.pth`` imports this module at interpreter start when the
variable asks for injection; it imports nothing else.  It waits on
``sys.meta_path`` for the first ``import ssl`` and injects (``aia_ext``'s
``autoinject``) as soon as ``ssl`` has run, before the code that imported it
goes on, so no context can be made before injection.  A process that never
imports ``ssl`` loads neither ``ssl`` nor aia_ext, and pays about the cost of
reading this file (issue 31, item 3: injecting at start-up added 40-145 ms
to every interpreter start, and gevent warned that ``ssl`` was imported
before it could patch it).  pip-system-certs waits the same way.

Where ``ssl`` is already imported (a sitecustomize, another ``.pth``),
injection happens at once.
"""

import sys


def _inject() -> None:
    try:
        import aia_ext._private.autoinject  # noqa: F401  # injects as it is imported
    except Exception as exc:  # noqa: BLE001 - never break the program that imported ssl
        sys.stderr.write("aia_ext: AIA_EXT_INJECT is set, but aia_ext cannot be imported: "
                         f"{type(exc).__name__}: {exc}\n")


class _ThenInject:
    """The loader of ``ssl``, then the injection."""

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def create_module(self, spec: object) -> object:
        return self._loader.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module: object) -> None:
        self._loader.exec_module(module)  # type: ignore[attr-defined]
        _inject()

    def __getattr__(self, name: str) -> object:  # get_source, is_package...
        return getattr(self._loader, name)


class _WaitForSSL:
    """A meta path finder that only waits: it finds ``ssl`` as the finders after it do,
    hands it a loader that injects once ``ssl`` has run, and leaves."""

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> object:
        if name != "ssl":
            return None
        try:
            sys.meta_path.remove(cls)
        except ValueError:
            pass
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _ThenInject(spec.loader)
                return spec
        return None


if "ssl" in sys.modules:
    _inject()
elif _WaitForSSL not in sys.meta_path:
    sys.meta_path.insert(0, _WaitForSSL)
