# The compiled cffi module built from csrc/ (see csrc/build_native.py).  cffi's
# objects are untyped: the typed wrappers are in aia_ext._private.binding.
from typing import Any

ffi: Any
lib: Any
