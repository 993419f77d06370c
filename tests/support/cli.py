"""The `gman-udf` command of this tree, run as a child process."""
import os
import subprocess
import sys

from tests.support import ROOT


def run_cli(*args, env=None, check=True):
    """Run the `gman-udf` command of this tree; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "pygen.cli", *args], capture_output=True, text=True, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"gman-udf {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc
