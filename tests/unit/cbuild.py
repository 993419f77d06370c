"""Build the plugin's C core into a small shared library and load it with cffi (ABI mode).

Unit tests call the JSON encoder and the Gearman codec directly, with no server. With
GMAN_SANITIZE=1 the library is built with AddressSanitizer + UndefinedBehaviorSanitizer;
the interpreter must then run with libasan preloaded (tests/test_sanitized_core.py does it).
"""
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import cffi

ROOT = Path(__file__).resolve().parents[2]
UDF = ROOT / "udf"

SANITIZE = os.environ.get("GMAN_SANITIZE") == "1"
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def build(name, sources, cdef):
    """Compile udf/<sources> into a cached .so and return (ffi, lib)."""
    if "udf_error.c" in sources and "udf_host.c" not in sources:
        sources = [*sources, "udf_host.c"]  # the last error asks the host which connection this is
    paths = [UDF / s for s in sources]
    flags = ["-std=gnu11", "-O1", "-g", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror", "-Wno-format-truncation", "-I", str(UDF)]
    if SANITIZE:
        flags += SANITIZE_FLAGS
    digest = hashlib.sha256()
    for p in paths + sorted(UDF.glob("*.h")):
        digest.update(p.read_bytes())
    digest.update(" ".join(flags).encode())
    out = Path(tempfile.gettempdir()) / f"gman-udf-test-{name}-{digest.hexdigest()[:16]}.so"
    if not out.exists():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["gcc", *flags, "-o", str(tmp), *map(str, paths), "-lpthread", "-lm"], check=True)
        os.replace(tmp, out)
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    return ffi, ffi.dlopen(str(out))
