"""`make dist`: the sdist and, built from it, the manylinux_2_17 wheels for x86-64 and aarch64,
each checked like the in-place wheel of test_build.py (exports, libc only, glibc <= 2.17) and
by auditwheel itself. Takes about 35 s (two wheel builds, the aarch64 one cross-compiled)."""
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from pygen.plugin import catalog

ROOT = Path(__file__).resolve().parents[2]
VERSION = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
ALLOWED_NEEDED = re.compile(r"(libc\.so\.\d+|libpthread\.so\.\d+|libdl\.so\.\d+|ld-linux[-\w.]*\.so\.\d+)$")
HOST_WEAK = {"_current_thd", "_Z19thd_get_current_thdv", "thd_get_thread_id", "mysql_plugin_registry_acquire",
             "mysql_plugin_registry_release"}
TOOLCHAIN_WEAK = {"_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable", "__gmon_start__", "__cxa_finalize"}
ARCHES = {
    "x86_64": {"nm": "nm", "machine": "Advanced Micro Devices X86-64"},
    "aarch64": {"nm": "aarch64-linux-gnu-nm", "machine": "AArch64"},
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(["make", "-C", str(ROOT), "dist", f"DIST={out}"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_dist_holds_the_sdist_and_two_manylinux_wheels(dist):
    names = sorted(p.name for p in dist.iterdir())
    assert names == [
        f"gman_udf-{VERSION}-py3-none-manylinux2014_aarch64.manylinux_2_17_aarch64.whl",
        f"gman_udf-{VERSION}-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        f"gman_udf-{VERSION}.tar.gz",
    ], names


def test_sdist_content(dist):
    names = tarfile.open(dist / f"gman_udf-{VERSION}.tar.gz").getnames()
    top = f"gman_udf-{VERSION}/"
    rel = {n[len(top):] for n in names if n.startswith(top)}
    assert all(n.startswith(top) or n == top.rstrip("/") for n in names)
    for needed in ("pyproject.toml", "CMakeLists.txt", "Makefile", "README.md", "udf/exports.map",
                   "tools/aarch64-linux-gnu.cmake", "pygen/cli.py", "PKG-INFO"):
        assert needed in rel, needed
    assert {f"udf/{p.name}" for p in (ROOT / "udf").glob("*.[ch]")} <= rel
    assert not [n for n in rel if n.split("/")[0] in ("build", "dist", ".pytest_cache", ".hypothesis")]
    assert not [n for n in rel if n.endswith(".so")]


def wheel_of(dist, arch):
    (wheel,) = dist.glob(f"*manylinux_2_17_{arch}.whl")
    return wheel


@pytest.fixture(scope="module", params=sorted(ARCHES))
def library(request, dist, tmp_path_factory):
    arch = request.param
    wheel = wheel_of(dist, arch)
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if re.search(r"\.so(\.|$)", n)] == ["pygen/gman_udf.so"]  # nothing grafted in
    assert not [n for n in names if ".libs/" in n]
    so = tmp_path_factory.mktemp(arch) / "gman_udf.so"
    so.write_bytes(zipfile.ZipFile(wheel).read("pygen/gman_udf.so"))
    return arch, wheel, so


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_wheel_content(library):
    _, wheel, _ = library
    names = zipfile.ZipFile(wheel).namelist()
    assert {p.relative_to(ROOT).as_posix() for p in (ROOT / "pygen").rglob("*.py")} <= set(names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
    arch = library[0]
    assert f"Tag: py3-none-manylinux_2_17_{arch}" in meta and "Root-Is-Purelib: false" in meta, meta


def test_library_is_for_its_architecture(library):
    arch, _, so = library
    assert ARCHES[arch]["machine"] in run("readelf", "-h", str(so))


def test_library_exports_exactly_the_catalog(library):
    arch, _, so = library
    symbols = dict(line.split()[::-1][:2] for line in run(ARCHES[arch]["nm"], "-D", "--defined-only",
                                                          str(so)).splitlines())
    expected = {s for f in catalog.FUNCTIONS for s in f.symbols()}
    assert set(symbols) == expected
    assert set(symbols.values()) == {"T"}


def test_library_needs_only_libc_and_glibc_2_17(library):
    arch, _, so = library
    dyn = run("readelf", "-d", str(so))
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    assert any(n.startswith("libc.so") for n in needed), needed
    assert [n for n in needed if not ALLOWED_NEEDED.match(n)] == [], needed
    assert "(RPATH)" not in dyn and "(RUNPATH)" not in dyn  # auditwheel added none

    undefined = run(ARCHES[arch]["nm"], "-D", "--undefined-only", str(so)).splitlines()
    weak = {line.split()[-1].split("@")[0] for line in undefined if line.split()[-2] == "w"}
    assert weak - TOOLCHAIN_WEAK == HOST_WEAK, weak
    strong = [line.split()[-1] for line in undefined if line.split()[-2] != "w"]
    assert [s for s in strong if not re.search(r"@GLIBC_[\d.]+$", s)] == []
    versions = {tuple(int(x) for x in v.split(".")) for v in re.findall(r"@GLIBC_([\d.]+)$", "\n".join(strong), re.M)}
    assert versions and max(versions) <= (2, 17), versions


def test_auditwheel_agrees(library):
    arch, wheel, _ = library
    out = subprocess.run(["auditwheel", "show", str(wheel)], capture_output=True, text=True, check=True)
    text = " ".join((out.stdout + out.stderr).split())
    assert f'is consistent with the following platform tag: "manylinux_2_17_{arch}"' in text, text
    assert "requires no external shared libraries" in text or "libc.so.6" in text, text


def test_pip_installs_the_x86_64_wheel_here(dist, tmp_path):
    """pip takes the manylinux tag on this machine, and the installed package finds its library."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target", site,
                    str(wheel_of(dist, "x86_64"))], check=True)
    proc = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import pathlib, pygen; print(pathlib.Path(pygen.__file__).with_name('gman_udf.so').is_file())"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert (proc.returncode, proc.stdout.strip()) == (0, "True"), proc.stderr
    sql = subprocess.run([str(venv / "bin" / "python"), "-m", "pygen.cli", "sql"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert sql.returncode == 0 and "CREATE FUNCTION" in sql.stdout.upper() and "gman_udf.so" in sql.stdout, sql.stderr
    # pip refuses the aarch64 wheel here: its tag is what a package index and pip go by.
    wrong = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--dry-run",
                            str(wheel_of(dist, "aarch64"))], capture_output=True, text=True)
    assert wrong.returncode != 0 and "is not a supported wheel on this platform" in wrong.stderr, wrong.stderr
