"""The catalog and the registration SQL rendered from it, per server flavor and version."""
import re

import pytest

from pygen import cli
from pygen.plugin import catalog, sqlgen
from pygen.plugin.sqlgen import Server
from tests.support.cli import run_cli

NATIVE_JSON = {"json_object", "json_array"}
AVAILABLE = {f.name for f in catalog.FUNCTIONS}
AGGREGATES = {f.name for f in catalog.FUNCTIONS if f.aggregate}

# version string -> (flavor, version, owns json_object/json_array natively, form of CREATE)
SERVERS = {
    "10.11.6-MariaDB-0+deb12u1": ("mariadb", (10, 11, 6), True, "or_replace"),
    "10.1.2-MariaDB": ("mariadb", (10, 1, 2), False, "drop_create"),
    "8.0.36": ("mysql", (8, 0, 36), True, "if_not_exists"),
    "8.0.20": ("mysql", (8, 0, 20), True, "drop_create"),
    "5.7.44": ("mysql", (5, 7, 44), True, "drop_create"),
    "5.6.51": ("mysql", (5, 6, 51), False, "drop_create"),
    "mariadb": ("mariadb", (999,), True, "or_replace"),
    "mysql": ("mysql", (999,), True, "if_not_exists"),
}

# the first versions that change something, and the ones just before them
BOUNDARIES = {
    "10.2.2-MariaDB": (False, "or_replace"),
    "10.2.3-MariaDB": (True, "or_replace"),
    "10.1.3-MariaDB": (False, "or_replace"),
    "5.7.7": (False, "drop_create"),
    "5.7.8": (True, "drop_create"),
    "8.0.28": (True, "drop_create"),
    "8.0.29": (True, "if_not_exists"),
}

CREATE = re.compile(r"CREATE (OR REPLACE )?(AGGREGATE )?FUNCTION (IF NOT EXISTS )?(\w+) RETURNS (STRING|INTEGER|REAL) "
                    r"SONAME '([^']+)'$")


def parse_creates(stmts):
    """{name: (or_replace, aggregate, if_not_exists, returns, soname)} of the CREATE statements."""
    out = {}
    for s in stmts:
        m = CREATE.match(s)
        if m:
            assert m.group(4) not in out, f"{m.group(4)} created twice"
            out[m.group(4)] = (bool(m.group(1)), bool(m.group(2)), bool(m.group(3)), m.group(5), m.group(6))
    return out


def check_form(stmts, form):
    """Every catalog function registered once, in `form`; nothing else in the statements."""
    creates = parse_creates(stmts)
    drops = [s for s in stmts if s.startswith("DROP ")]
    assert len(creates) + len(drops) == len(stmts), stmts
    for name, (or_replace, _agg, if_not_exists, _ret, _so) in creates.items():
        assert or_replace == (form == "or_replace"), name
        assert if_not_exists == (form == "if_not_exists"), name
    if form == "drop_create":
        # each CREATE right after the DROP of the same name: running the script twice is harmless
        assert len(drops) == len(creates)
        for drop, create in zip(stmts[::2], stmts[1::2]):
            name = CREATE.match(create).group(4)
            assert drop == f"DROP FUNCTION IF EXISTS {name}"
    else:
        assert drops == []
    return creates


@pytest.mark.parametrize("text", sorted(SERVERS))
def test_parse(text):
    flavor, version, _, _ = SERVERS[text]
    assert Server.parse(text) == Server(flavor, version)


@pytest.mark.parametrize("text", sorted(SERVERS))
def test_install_statements_per_server(text):
    _, _, native, form = SERVERS[text]
    server = Server.parse(text)
    creates = check_form(sqlgen.install_statements(server), form)
    expected = AVAILABLE - NATIVE_JSON if native else AVAILABLE
    assert set(creates) == expected
    assert {f.name for f in sqlgen.functions_for(server)} == expected
    for name, (_, aggregate, _, returns, soname) in creates.items():
        fn = catalog.by_name(name)
        assert aggregate == fn.aggregate, name
        assert returns == fn.returns, name
        assert soname == catalog.LIBRARY


@pytest.mark.parametrize("text", sorted(BOUNDARIES))
def test_version_boundaries(text):
    native, form = BOUNDARIES[text]
    creates = check_form(sqlgen.install_statements(Server.parse(text)), form)
    assert NATIVE_JSON.issubset(creates) != native
    assert Server.parse(text).has_or_replace == (form == "or_replace")


def test_aggregates_are_rendered_with_aggregate():
    assert AGGREGATES == {"gman_sum", "gman_bulk_background"}
    for text in SERVERS:
        for fn in sqlgen.functions_for(Server.parse(text)):
            for stmt in sqlgen.create_statement(fn, Server.parse(text)):
                if stmt.startswith("CREATE"):
                    assert ("AGGREGATE FUNCTION" in stmt) == fn.aggregate, stmt
    assert sqlgen.create_statement(catalog.by_name("gman_sum"), Server.parse("8.0.36")) == [
        "CREATE AGGREGATE FUNCTION IF NOT EXISTS gman_sum RETURNS INTEGER SONAME 'gman_udf.so'"]
    assert sqlgen.create_statement(catalog.by_name("gman_sum"), Server.parse("10.11.6-MariaDB")) == [
        "CREATE OR REPLACE AGGREGATE FUNCTION gman_sum RETURNS INTEGER SONAME 'gman_udf.so'"]
    assert sqlgen.create_statement(catalog.by_name("gman_sum"), Server.parse("5.7.44")) == [
        "DROP FUNCTION IF EXISTS gman_sum", "CREATE AGGREGATE FUNCTION gman_sum RETURNS INTEGER SONAME 'gman_udf.so'"]


def test_portable_sql_skips_native_names_and_uses_drop_create():
    creates = check_form(sqlgen.install_statements(sqlgen.PORTABLE), "drop_create")
    assert set(creates) == AVAILABLE - NATIVE_JSON


@pytest.mark.parametrize("text", sorted(SERVERS))
def test_uninstall_statements(text):
    _, _, native, _ = SERVERS[text]
    server = Server.parse(text)
    stmts = sqlgen.uninstall_statements(server)
    names = [s[len("DROP FUNCTION IF EXISTS "):] for s in stmts]
    assert stmts == [f"DROP FUNCTION IF EXISTS {n}" for n in names]
    everything = {f.name for f in catalog.FUNCTIONS}
    assert set(names) == (everything - NATIVE_JSON if native else everything)
    assert len(names) == len(set(names))
    # narrowed to what mysql.func lists
    assert sqlgen.uninstall_statements(server, ["gman_do", "udf_json_object", "not_ours"]) == [
        "DROP FUNCTION IF EXISTS udf_json_object", "DROP FUNCTION IF EXISTS gman_do"]
    assert sqlgen.uninstall_statements(server, []) == []


@pytest.mark.parametrize("text", ["", "garbage", "MariaDB-10.11", "v10", "10", ".5.7", "maria"])
def test_bad_version_raises_value_error(text):
    with pytest.raises(ValueError):
        Server.parse(text)


def test_rendered_script_shape():
    text = sqlgen.install_sql(Server.parse("8.0.36"))
    lines = text.splitlines()
    assert lines[0] == sqlgen.GENERATED
    assert lines[1] == "-- Registers the gman-udf functions (gman_udf.so) on mysql 8.0.36."
    assert lines[2:] == [s + ";" for s in sqlgen.install_statements(Server.parse("8.0.36"))]
    assert "on current mariadb." in sqlgen.uninstall_sql(Server.parse("mariadb"))
    assert "on any MariaDB or MySQL server." in sqlgen.install_sql()


def test_export_map_lists_every_symbol():
    text = catalog.export_map()
    names = re.findall(r"^    (\w+);$", text, re.M)
    expected = sorted(s for f in catalog.FUNCTIONS for s in f.symbols())
    assert names == expected
    assert "local:\n    *;" in text
    assert set(catalog.by_name("gman_sum").symbols()) == {
        "gman_sum", "gman_sum_init", "gman_sum_deinit", "gman_sum_add", "gman_sum_clear", "gman_sum_remove"}


def test_catalog_names_unique_and_valid():
    names = [f.name for f in catalog.FUNCTIONS]
    assert len(names) == len(set(names))
    for f in catalog.FUNCTIONS:
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", f.name)
        assert f.returns in ("STRING", "INTEGER", "REAL")
        assert f.signature.startswith(f.name + "(")
        assert f.max_args is None or f.max_args >= f.min_args
    with pytest.raises(KeyError):
        catalog.by_name("nope")


# --- the CLI prints what sqlgen renders ---------------------------------------------------------

def test_cli_sql_prints_portable_install(capsys):
    assert cli.main(["sql"]) == 0
    assert capsys.readouterr().out == sqlgen.install_sql(sqlgen.PORTABLE)


@pytest.mark.parametrize("text", sorted(SERVERS))
def test_cli_sql_per_server(capsys, text):
    assert cli.main(["sql", "--server-version", text]) == 0
    assert capsys.readouterr().out == sqlgen.install_sql(Server.parse(text))
    assert cli.main(["sql", "--uninstall", "--server-version", text]) == 0
    assert capsys.readouterr().out == sqlgen.uninstall_sql(Server.parse(text))


def test_cli_sql_uninstall_subprocess():
    proc = run_cli("sql", "--uninstall", "--server-version", "8.0.36")
    assert proc.stdout == sqlgen.uninstall_sql(Server.parse("8.0.36"))
    assert "EXISTS json_object;" not in proc.stdout and "EXISTS udf_json_object;" in proc.stdout
    proc = run_cli("sql")
    assert proc.stdout == sqlgen.install_sql()


def test_cli_sql_bad_version_is_a_clear_error_not_a_traceback():
    proc = run_cli("sql", "--server-version", "garbage", check=False)
    assert proc.returncode != 0
    assert "garbage" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
