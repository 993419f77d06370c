"""Helpers shared by the tests: `from tests.support.<module> import ...` (pyproject.toml puts the
repository root on pytest's sys.path). Fixtures stay in the conftest.py files and call these."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
