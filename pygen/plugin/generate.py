"""Write the files generated from the catalog: `python -m pygen.plugin.generate` (or --check).

sql/install.sql, sql/uninstall.sql  portable registration scripts (any MariaDB/MySQL)
sql/example_trigger.sql              the triggers `gman-udf trigger` renders for an example table
udf/exports.map                      the linker's list of SQL-visible symbols
README.md                            the function table between its markers
"""
import argparse
import sys
from pathlib import Path

from pygen.plugin import catalog, sqlgen
from pygen.sync import triggers

ROOT = Path(__file__).resolve().parents[2]
TABLE_BEGIN = "<!-- function table: generated from pygen/plugin/catalog.py -->"
TABLE_END = "<!-- end of function table -->"


def _readme(text: str) -> str:
    if TABLE_BEGIN not in text or TABLE_END not in text:
        return text
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return head + TABLE_BEGIN + "\n" + catalog.markdown_table() + TABLE_END + tail


def outputs(root: Path = ROOT):
    """{path: expected content} for every generated file."""
    readme = root / "README.md"
    out = {
        root / "sql" / "install.sql": sqlgen.install_sql(),
        root / "sql" / "uninstall.sql": sqlgen.uninstall_sql(),
        root / "udf" / "exports.map": catalog.export_map(),
        root / "sql" / "example_trigger.sql": triggers.example_sql(),
    }
    if readme.exists():
        out[readme] = _readme(readme.read_text())
    return out


def stale(root: Path = ROOT):
    return [p for p, want in outputs(root).items() if not p.exists() or p.read_text() != want]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pygen.plugin.generate", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale()
        for p in bad:
            print(f"stale: {p.relative_to(ROOT)}", file=sys.stderr)
        return 1 if bad else 0
    for p, want in outputs().items():
        if not p.exists() or p.read_text() != want:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(want)
            print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
