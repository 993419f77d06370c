"""The wheel from `pip wheel .`: its name, its content, and a plugin library that exports exactly
the catalog's symbols and needs nothing but libc on the database host."""
import fnmatch
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from pygen.plugin import catalog

ROOT = Path(__file__).resolve().parents[2]

# What a plain C library may need at run time: libc, and on older glibc its split-out parts.
ALLOWED_NEEDED = re.compile(r"(libc\.so\.\d+|libpthread\.so\.\d+|libdl\.so\.\d+|ld-linux[-\w.]*\.so\.\d+)$")
FORBIDDEN = ("libstdc++", "libmysqlclient", "libmariadb", "libgearman", "libuuid", "libssl", "libcrypto")


def expected_symbols():
    return {s for f in catalog.FUNCTIONS for s in f.symbols()}


def test_wheel_name(wheel):
    assert fnmatch.fnmatch(wheel.name, "gman_udf-*-py3-none-linux_*.whl"), wheel.name


def test_wheel_content(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pygen").rglob("*.py")}
    assert sources and sources <= set(names), sorted(sources - set(names))
    libraries = [n for n in names if re.search(r"\.so(\.|$)", n)]
    assert libraries == ["pygen/gman_udf.so"]
    assert not [n for n in names if "libgman" in n]
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "gman-udf = pygen.cli:main" in entry_points


def test_library_exports_exactly_the_catalog(built_library):
    out = subprocess.run(["nm", "-D", "--defined-only", str(built_library)], capture_output=True, text=True,
                         check=True).stdout
    symbols = {}
    for line in out.splitlines():
        parts = line.split()
        assert len(parts) == 3, line
        symbols[parts[2]] = parts[1]
    expected = expected_symbols()
    assert set(symbols) - expected == set(), "exported but not in the catalog"
    assert expected - set(symbols) == set(), "in the catalog but not exported"
    assert set(symbols.values()) == {"T"}, symbols  # all of them functions in .text


def test_library_needs_only_libc(built_library):
    dyn = subprocess.run(["readelf", "-d", str(built_library)], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    assert any(n.startswith("libc.so") for n in needed), needed
    assert [n for n in needed if not ALLOWED_NEEDED.match(n)] == [], needed
    assert "(RPATH)" not in dyn and "(RUNPATH)" not in dyn  # nothing looked up next to the build tree

    ldd = subprocess.run(["ldd", str(built_library)], capture_output=True, text=True, check=True).stdout
    resolved = [line.split()[0] for line in ldd.splitlines() if line.strip()]
    resolved = [Path(n).name for n in resolved if not n.startswith("linux-vdso")]
    assert [n for n in resolved if not ALLOWED_NEEDED.match(n)] == [], ldd
    for bad in FORBIDDEN:
        assert bad not in ldd and bad not in dyn, bad
    assert "not found" not in ldd


def test_library_undefined_symbols_all_come_from_glibc(built_library):
    """--no-undefined and the export list leave only versioned glibc imports (weak hooks aside)."""
    out = subprocess.run(["nm", "-D", "--undefined-only", str(built_library)], capture_output=True, text=True,
                         check=True).stdout
    strays = []
    for line in out.splitlines():
        kind, name = line.split()[-2:]
        if kind == "w":
            continue
        if not re.search(r"@GLIBC_[\d.]+$", name):
            strays.append(name)
    assert strays == []


def test_library_loads_on_glibc_2_17(built_library):
    """Nothing newer than glibc 2.17 (CentOS 7, Debian 8) is needed: no dladdr/pthread_once
    (2.34 symbol versions), no getrandom() wrapper (2.25). Any server's plugin_dir will do."""
    out = subprocess.run(["nm", "-D", "--undefined-only", str(built_library)], capture_output=True, text=True,
                         check=True).stdout
    versions = {name: tuple(int(x) for x in v.split(".")) for name, v in re.findall(r"(\w+)@GLIBC_([\d.]+)", out)}
    too_new = {name: v for name, v in versions.items() if v > (2, 17)}
    assert versions and too_new == {}, too_new


def test_generated_files_are_not_stale():
    proc = subprocess.run([sys.executable, "-m", "pygen.plugin.generate", "--check"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


# The host services udf/udf_host.c uses when the server has them (MariaDB: _current_thd; MySQL:
# the registry and thd_get_current_thd; both: thd_get_thread_id), and what gcc's start files
# reference weakly anyway.
HOST_WEAK = {"_current_thd", "_Z19thd_get_current_thdv", "thd_get_thread_id", "mysql_plugin_registry_acquire",
             "mysql_plugin_registry_release"}
TOOLCHAIN_WEAK = {"_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable", "__gmon_start__", "__cxa_finalize"}


def test_server_symbols_are_weak_references_only(built_library):
    """--no-undefined lets weak references through unresolved (they are 0 where the host lacks
    them), so the one library loads with RTLD_NOW into MariaDB and every MySQL: every server
    symbol must be weak, and only the known ones may be."""
    out = subprocess.run(["nm", "-D", "--undefined-only", str(built_library)], capture_output=True, text=True,
                         check=True).stdout
    weak = {line.split()[-1].split("@")[0] for line in out.splitlines() if line.split()[-2] == "w"}
    assert weak - TOOLCHAIN_WEAK == HOST_WEAK, weak
    strong = {line.split()[-1] for line in out.splitlines() if line.split()[-2] != "w"}
    assert not {s.split("@")[0] for s in strong} & HOST_WEAK, strong
