"""Pipelined mode (pipeline_window > 0): calls return before JOB_CREATED, and a gearmand
failover still loses nothing, because unconfirmed jobs are re-sent to the next server."""
import signal

import pytest

from pygen.plugin import sqlgen
from pygen.sandbox import Gearmand, MariaDB

WINDOW = 64


@pytest.fixture
def pipelined_server(built_library, tmp_path):
    """A private mariadbd whose plugin reads GMAN_UDF_PIPELINE_WINDOW and its servers from
    the environment, with the functions registered and a table with the seeds' trigger."""
    a = Gearmand(queue="sqlite").start()
    b = Gearmand(queue="sqlite").start()
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "gman_udf.so").write_bytes(built_library.read_bytes())
    env = {"GMAN_UDF_PIPELINE_WINDOW": str(WINDOW), "GMAN_UDF_SERVERS": f"{a.address},{b.address}"}
    db = MariaDB(plugin_dir=plugin_dir, env=env).start()
    cur = db.connect().cursor()
    for stmt in sqlgen.install_statements(sqlgen.Server.parse(db.version)):
        cur.execute(stmt)
    cur.execute("CREATE DATABASE p")
    cur.execute("USE p")
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    cur.execute("INSERT INTO t SELECT seq, 0 FROM seq_1_to_200")
    cur.execute("CREATE TRIGGER t_au AFTER UPDATE ON t FOR EACH ROW "
                "SET @r = gman_do_background('sync', udf_json_object(NEW.id AS id, NEW.v AS v))")
    yield cur, a, b
    db.close()
    a.close()
    b.close()


def queued(server, fn="sync"):
    return server.status().get(fn, (0, 0, 0))[0]


def test_pipelined_call_returns_the_unique_id(pipelined_server):
    cur, a, _ = pipelined_server
    cur.execute("SELECT gman_do_background('sync', 'x'), gman_do_background('sync', 'y', 'my-id')")
    generated, given = cur.fetchone()
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert given == b"my-id"


def test_failover_in_pipelined_mode_loses_nothing(pipelined_server):
    cur, a, b = pipelined_server
    updates = 0
    for i in range(1, 21):
        cur.execute("UPDATE t SET v = %s", (i,))
        updates += cur.rowcount
        if i == 8:
            a.kill(signal.SIGKILL)  # up to WINDOW jobs were unconfirmed on its connection
        cur.execute("SELECT gman_last_error()")
    assert updates == 20 * 200
    a.start()  # its sqlite queue still has what it confirmed before the kill
    total = queued(a) + queued(b)
    assert total >= updates, (queued(a), queued(b))
    # At-least-once: a job the dead server stored but never confirmed may come twice.
    assert total <= updates + WINDOW


def test_all_servers_down_in_pipelined_mode_is_an_error(pipelined_server):
    cur, a, b = pipelined_server
    a.kill(signal.SIGKILL)
    b.kill(signal.SIGKILL)
    cur.execute("SELECT gman_do_background('sync', 'x'), gman_last_error()")
    value, why = cur.fetchone()
    assert value is None
    assert b"gearmand" in why and (b"refused" in why or b"closed" in why or b"skipped" in why)
