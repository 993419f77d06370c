"""The statements `gman-udf install` runs (pygen/plugin/install.py, sqlgen.install_plan), checked
against a fake server for MySQL and MariaDB version strings: no MySQL server can run here.

What the plan must respect on a real server:
- a new library file is only loaded once every function of the old one is dropped (the
  server maps one library per file name while any function of it is registered; CREATE OR
  REPLACE, IF NOT EXISTS and interleaved DROP/CREATE all keep the old code running);
- DROP FUNCTION [IF EXISTS] name with no loadable function of that name drops the stored
  function of that name (MySQL 5.7 and 8.0 <= 8.0.28, MariaDB): only names mysql.func lists
  may be dropped.
"""
import re

import pytest

from pygen.plugin import catalog, install, sqlgen

VERSIONS = ["5.7.44-log", "8.0.18", "8.0.28", "8.0.29", "8.4.3", "9.1.0", "10.11.6-MariaDB-0+deb12u1"]
SEEDS_LIBRARY = "libgearman_mysql_udf.so"  # gearman-mysql-udf 0.6 registers gman_do & co. from it
RET_CODES = {"STRING": 0, "REAL": 1, "INTEGER": 2, "DECIMAL": 4}  # mysql.func.ret


class FakeCursor:
    def __init__(self, server):
        self.server, self.rows = server, []

    def execute(self, sql, args=None):
        self.server.log.append(sql)
        s = " ".join(sql.split())
        if s.startswith("SELECT VERSION()"):
            self.rows = [(self.server.version, str(self.server.plugin_dir))]
        elif s.startswith("SELECT name, dl, ret, type FROM mysql.func"):
            self.rows = [(n.encode(), dl.encode(), ret, kind.encode()) for n, (dl, ret, kind) in self.server.func.items()]
        elif s.startswith("SELECT name FROM mysql.func WHERE dl"):
            self.rows = [(n.encode(),) for n, row in self.server.func.items() if row[0] == args[0]]
        elif s.startswith("SELECT @@pid_file"):
            self.rows = [(str(self.server.plugin_dir / "no-such.pid"),)]  # no process to look at
        elif s.startswith("SELECT udf_json_object(1 AS ok)"):
            self.rows = [(b'{"ok":1}',)]
        elif m := re.fullmatch(r"DROP FUNCTION (?:IF EXISTS )?(\w+)", s):
            self.server.drop(m.group(1))
        elif m := re.fullmatch(r"CREATE (OR REPLACE )?(AGGREGATE )?FUNCTION (IF NOT EXISTS )?(\w+) RETURNS (\w+)"
                               r" SONAME '([^']+)'", s):
            replace, agg, if_not_exists, name, returns, dl = m.groups()
            if name in self.server.func and if_not_exists:
                return  # kept as it is, old library and all
            if name in self.server.func and replace:  # MariaDB: one drop and create, under one lock
                self.server.func.pop(name)
            self.server.create(name, dl, RET_CODES[returns], "aggregate" if agg else "function")
        else:
            raise AssertionError(f"the fake does not know {sql!r}")

    def fetchone(self):
        return self.rows[0]

    def fetchall(self):
        return list(self.rows)


class FakeServer:
    """mysql.func, stored functions of the current database, and which library file is mapped."""

    def __init__(self, version, plugin_dir, func=None, stored=()):
        self.version, self.plugin_dir = version, plugin_dir
        self.func = dict(func or {})
        self.stored = set(stored)  # stored functions of the connection's current database
        self.log = []
        self.mapped = {row[0]: "old" for row in self.func.values()}  # dl -> which file is loaded

    def cursor(self):
        return FakeCursor(self)

    def drop(self, name):
        if name in self.func:
            dl = self.func.pop(name)[0]
            if not any(row[0] == dl for row in self.func.values()):
                self.mapped.pop(dl, None)  # the last function of the file: dlclose
        elif name in self.stored:  # what MySQL 5.7 / 8.0.28 and MariaDB do
            self.stored.discard(name)
        else:
            raise AssertionError(f"DROP FUNCTION {name}: nothing of that name")

    def create(self, name, dl, ret, kind):
        assert name not in self.func, f"CREATE FUNCTION {name}: exists"
        self.func[name] = (dl, ret, kind)
        self.mapped.setdefault(dl, "new")  # an already mapped file is reused, not reloaded

    def ddl(self):
        return [s for s in self.log if s.startswith(("DROP", "CREATE"))]


def ours(version, library=catalog.LIBRARY):
    server = sqlgen.Server.parse(version)
    return {f.name: (library, RET_CODES[f.returns], "aggregate" if f.aggregate else "function")
            for f in sqlgen.functions_for(server)}


@pytest.fixture
def library(tmp_path):
    lib = tmp_path / "build" / catalog.LIBRARY
    lib.parent.mkdir()
    lib.write_bytes(b"\x7fELF new build")
    return lib


def plugin_dir(tmp_path, content=None):
    d = tmp_path / "plugin"
    d.mkdir(exist_ok=True)
    if content is not None:
        (d / catalog.LIBRARY).write_bytes(content)
    return d


@pytest.mark.parametrize("version", VERSIONS)
def test_first_install_drops_nothing(version, library, tmp_path):
    """Nothing registered yet: no DROP at all, so a stored function named like one of ours
    (here every one of them, in the current database) survives."""
    names = set(ours(version))
    server = FakeServer(version, plugin_dir(tmp_path), stored=names)
    install.install(server, library, local=True)
    assert [s for s in server.ddl() if s.startswith("DROP")] == []
    assert server.stored == names
    assert server.func == ours(version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("local", [True, False], ids=["copied", "not-compared"])
def test_new_library_drops_everything_then_creates(version, local, library, tmp_path):
    """Every function registered from an older file: all are dropped before the first CREATE
    (the old file is unmapped), then created again, and the server maps the new file."""
    server = FakeServer(version, plugin_dir(tmp_path, b"\x7fELF old build"), func=ours(version))
    rep = install.install(server, library, local=local)
    ddl = server.ddl()
    first_create = next(i for i, s in enumerate(ddl) if s.startswith("CREATE"))
    assert all(s.startswith("DROP") for s in ddl[:first_create]), ddl
    assert sorted(s.rsplit(" ", 1)[1] for s in ddl[:first_create]) == sorted(ours(version)), ddl
    assert not any("IF NOT EXISTS" in s or "OR REPLACE" in s for s in ddl), ddl
    assert server.mapped == {catalog.LIBRARY: "new"}
    assert server.func == ours(version)
    assert rep.reloaded and sorted(rep.dropped) == sorted(ours(version))


@pytest.mark.parametrize("version", VERSIONS)
def test_new_library_also_drops_names_the_catalog_no_longer_has(version, library, tmp_path):
    func = dict(ours(version), gman_retired=(catalog.LIBRARY, 0, "function"))
    server = FakeServer(version, plugin_dir(tmp_path, b"old"), func=func)
    install.install(server, library, local=True)
    assert "DROP FUNCTION IF EXISTS gman_retired" in server.ddl()
    assert server.mapped == {catalog.LIBRARY: "new"}


@pytest.mark.parametrize("version", VERSIONS)
def test_same_library_leaves_registered_functions_alone(version, library, tmp_path):
    """The file in plugin_dir is this one and every function is registered as we would:
    nothing is dropped or created (triggers never see a function missing)."""
    server = FakeServer(version, plugin_dir(tmp_path, library.read_bytes()), func=ours(version))
    rep = install.install(server, library, local=True)
    assert server.ddl() == []
    assert rep.copied is False and not rep.reloaded


@pytest.mark.parametrize("version", VERSIONS)
def test_same_library_fixes_only_what_differs(version, library, tmp_path):
    """One function missing, one registered from the seeds' library, one with another
    return type: exactly those are (dropped if listed and) created; stored functions of the
    missing name survive."""
    func = ours(version)
    del func["gman_stamp"]
    func["gman_do"] = (SEEDS_LIBRARY, 0, "function")
    func["gman_sum"] = (catalog.LIBRARY, 0, "aggregate")  # was STRING, is INTEGER
    server = FakeServer(version, plugin_dir(tmp_path, library.read_bytes()), func=func, stored={"gman_stamp"})
    install.install(server, library, local=True)
    assert sorted(server.ddl()) == sorted([
        "DROP FUNCTION IF EXISTS gman_do", "DROP FUNCTION IF EXISTS gman_sum",
        "CREATE FUNCTION gman_do RETURNS STRING SONAME 'gman_udf.so'",
        "CREATE AGGREGATE FUNCTION gman_sum RETURNS INTEGER SONAME 'gman_udf.so'",
        "CREATE FUNCTION gman_stamp RETURNS INTEGER SONAME 'gman_udf.so'"])
    assert server.stored == {"gman_stamp"}
    assert server.func == ours(version)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_drop_names_a_registered_function(version, library, tmp_path):
    """Whatever mysql.func holds, install and uninstall drop only names it lists; uninstall
    only ours (not the seeds' gman_do)."""
    func = {n: row for i, (n, row) in enumerate(ours(version).items()) if i % 2}
    func["gman_do"] = (SEEDS_LIBRARY, 0, "function")
    for local, content in ((True, b"old"), (True, None), (False, None)):
        server = FakeServer(version, plugin_dir(tmp_path, content), func=func, stored=set(ours(version)))
        listed = set(server.func)
        install.install(server, library, local=local)
        drops = {s.rsplit(" ", 1)[1] for s in server.ddl() if s.startswith("DROP")}
        assert drops <= listed, drops - listed
        assert server.stored == set(ours(version))
    server = FakeServer(version, tmp_path, func=func, stored=set(ours(version)))
    install.uninstall(server)
    assert server.func == {"gman_do": (SEEDS_LIBRARY, 0, "function")}
    assert server.stored == set(ours(version))
