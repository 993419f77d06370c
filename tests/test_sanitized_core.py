"""The C unit tests again, built with AddressSanitizer + UndefinedBehaviorSanitizer.

The sanitized library needs libasan loaded before anything else, so the unit tests run in a
child interpreter with LD_PRELOAD; any ASan/UBSan report aborts it and fails this test.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _runtime(name):
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True).stdout.strip()
    assert os.path.isabs(path) and os.path.exists(path), f"{name} not found: install gcc's sanitizer runtime"
    return path


def test_unit_tests_pass_under_asan_and_ubsan():
    env = dict(os.environ)
    env.update(
        GMAN_SANITIZE="1",
        LD_PRELOAD=_runtime("libasan.so"),
        # Python itself leaks at exit by design; leaks of the C core are checked per call
        # by the tests (init/free pairs) and by the mysqld run under ASan.
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "unit")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"unit tests failed under ASan/UBSan:\n{tail}"
    assert " passed" in proc.stdout, tail
    assert "runtime error" not in proc.stderr and "AddressSanitizer" not in proc.stderr, tail
