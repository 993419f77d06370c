"""The README's main command, `gman-udf demo`, end to end on its own throwaway servers."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_pipeline_and_ends_in_sync(built_library):
    env = dict(os.environ, GMAN_UDF_LIBRARY=str(built_library),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "pygen.cli", "demo", "--seconds", "3", "--rate", "200"],
                          capture_output=True, text=True, env=env, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "== in sync ==" in out, out
    assert "0 missing, 0 stale, 0 extra" in out, out
    assert "ROLLED BACK" not in out.split("rolled-back transaction:")[1].splitlines()[0], out
    assert "commit -> visible in Redis" in out, out
