"""The plugin's C core as a shared library, loaded with cffi (ABI mode).

CMake builds it: the target gman_core_test in CMakeLists.txt has the plugin's source list and
compile options, so a new udf/*.c file listed in GMAN_UDF_SOURCES is in the tests' library too.
The build directory is cached under the temporary directory (one per tree and mode; CMake
rebuilds what changed). With GMAN_SANITIZE=1 it is built with AddressSanitizer + UBSan
(-DGMAN_SANITIZE=ON); the interpreter must then run with libasan preloaded
(tests/test_sanitized_core.py does it).
"""
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import cffi

from tests.support import ROOT

UDF = ROOT / "udf"
SANITIZE = os.environ.get("GMAN_SANITIZE") == "1"
TARGET = "gman_core_test"
# Release as the wheel (pyproject.toml: cmake.build-type); Debug as test_gman_asan's sanitized plugin.
CONFIGURE = ["-DCMAKE_BUILD_TYPE=Debug", "-DGMAN_SANITIZE=ON"] if SANITIZE else ["-DCMAKE_BUILD_TYPE=Release"]
BUILD = Path(tempfile.gettempdir()) / (f"gman-udf-core-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]}"
                                       + ("-asan" if SANITIZE else ""))


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")


@functools.lru_cache(maxsize=None)
def core_library() -> Path:
    """lib<TARGET>.so, configured and brought up to date once per process."""
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD / "lock", "w") as lock:  # another pytest on this tree may build at the same time
        fcntl.flock(lock, fcntl.LOCK_EX)
        _run(["cmake", "-S", str(ROOT), "-B", str(BUILD), *CONFIGURE])  # fast once cached
        _run(["cmake", "--build", str(BUILD), "--target", TARGET, "--parallel", "2"])
    return BUILD / f"lib{TARGET}.so"


def load(name, cdef):
    """(ffi, lib) for the core, from a copy of the library of its own: each name has its own
    globals (server registry, settings, counters), as if it were another mysqld."""
    core = core_library()
    digest = hashlib.sha256(core.read_bytes()).hexdigest()[:16]
    copies = BUILD / "copies"
    copies.mkdir(exist_ok=True)
    path = copies / f"{name}-{digest}.so"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(core, tmp)
        os.replace(tmp, path)  # a new file: processes that loaded an older copy keep theirs
        for old in copies.glob(f"{name}-*.so"):
            if old != path:
                old.unlink(missing_ok=True)
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    return ffi, ffi.dlopen(str(path))
