"""Where the built plugin library is."""
import os
from importlib import resources
from pathlib import Path

from pygen.plugin.catalog import LIBRARY


def library_path() -> Path:
    """The gman_udf.so to install: $GMAN_UDF_LIBRARY, else the one shipped in this package."""
    env = os.environ.get("GMAN_UDF_LIBRARY")
    if env:
        p = Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"GMAN_UDF_LIBRARY={env}: no such file")
        return p
    p = Path(str(resources.files("pygen") / LIBRARY))
    if not p.is_file():
        raise FileNotFoundError(
            f"{LIBRARY} is not in {p.parent}: install the package with `pip install .` "
            "(which builds it), or point GMAN_UDF_LIBRARY at a built library")
    return p
