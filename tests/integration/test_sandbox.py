"""The throwaway servers of pygen.sandbox start, answer, restart, take signals and go away."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pygen import sandbox
from pygen.gearman.protocol import REQ, Type, encode
from pygen.sandbox import Gearmand, MariaDB, PerlGearmand, Redis, ServerError

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_mariadb_answers_on_socket_and_tcp(mariadb, plugin_dir):
    with mariadb.connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER(), @@port, @@plugin_dir, @@character_set_server")
        user, port, plugin, charset = cur.fetchone()
    assert (user, port, charset) == ("root@localhost", mariadb.port, "utf8mb4")
    assert Path(plugin) == Path(plugin_dir)
    with mariadb.connect(host=mariadb.host) as conn:
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone() == ("root@127.0.0.1",)
    assert "MariaDB" in mariadb.version
    assert mariadb.dsn == {"host": "127.0.0.1", "port": mariadb.port, "user": "root", "password": ""}


def test_mariadb_restart_keeps_data():
    with MariaDB() as db:
        with db.connect() as conn:
            conn.cursor().execute("CREATE DATABASE t")
            conn.cursor().execute("CREATE TABLE t.kept (id INT PRIMARY KEY) ENGINE=InnoDB")
            conn.cursor().execute("INSERT INTO t.kept VALUES (1), (2)")
        old_pid, port = db.pid, db.port
        db.restart()
        assert db.pid != old_pid and not alive(old_pid) and db.port == port
        with db.connect() as conn:
            cur = conn.cursor()
            cur.execute("SELECT id FROM t.kept ORDER BY id")
            assert cur.fetchall() == ((1,), (2,))


def test_redis_ping(redis_server):
    client = redis_server.client()
    assert client.ping()
    client.set("sandbox:k", "v")
    assert client.get("sandbox:k") == b"v"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"


def test_gearmand_admin(gearmand):
    assert gearmand.address == f"127.0.0.1:{gearmand.port}"
    assert isinstance(gearmand.admin("status"), str)  # the session server may hold other tests' functions
    assert gearmand.admin("version").startswith("OK ")
    before = gearmand.client_count()
    conns = [socket.create_connection((gearmand.host, gearmand.port)) for _ in range(3)]
    try:
        deadline = time.monotonic() + 5
        while gearmand.client_count() != before + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gearmand.client_count() == before + 3
    finally:
        for c in conns:
            c.close()


def test_gearmand_sigstop_sigcont(fresh_gearmand):
    gm = fresh_gearmand()
    gm.kill(signal.SIGSTOP)
    try:
        with pytest.raises(TimeoutError):
            gm.admin("status", timeout=0.3)
    finally:
        gm.kill(signal.SIGCONT)
    assert gm.status() == {}
    gm.kill(signal.SIGSTOP)
    gm.restart()  # stop() must also reach a frozen server
    assert gm.status() == {}


def test_sqlite_queue_keeps_background_job_across_restart(fresh_gearmand):
    gm = fresh_gearmand(queue="sqlite")
    subprocess.run(["gearman", "-h", gm.host, "-p", str(gm.port), "-f", "fn", "-b", "-u", "job-1",
                    "--", "payload"], check=True, timeout=10)
    assert gm.status() == {"fn": (1, 0, 0)}
    gm.restart()
    assert gm.queue_db.exists()
    assert gm.status() == {"fn": (1, 0, 0)}


def test_c_gearmand_runs_whatever_gearmand_is_first_on_path(tmp_path, monkeypatch):
    # a non-root PATH often lacks /usr/sbin, so `gearmand` is the Perl Gearman::Server there
    fake = tmp_path / "bin"
    fake.mkdir()
    marker = tmp_path / "fake-ran"
    (fake / "gearmand").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (fake / "gearmand").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(Gearmand, "_has_sqlite", None)  # asked again, under this PATH
    with Gearmand(queue="sqlite") as gm:
        assert Path(os.readlink(f"/proc/{gm.pid}/exe")) == Path("/usr/sbin/gearmand")
        assert gm.admin("version").startswith("OK ") and gm.status() == {}
    assert not marker.exists()


def test_perl_gearmand_sandbox():
    with PerlGearmand() as gm:
        assert Path(f"/proc/{gm.pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"/usr/bin/perl", b"/usr/bin/gearmand"]
        assert gm.admin("version") == "v1.130.1"
        assert gm.status() == {}
        with socket.create_connection((gm.host, gm.port)) as s:  # a background job shows in "status"
            s.sendall(encode(REQ, Type.SUBMIT_JOB_BG, "fn", "u1", b"x"))
            assert s.recv(100).startswith(b"\0RES")
        assert gm.status() == {"fn": (1, 0, 0)}
        assert gm.admin("maxqueue fn 5") == "OK"
        assert gm.client_count() == 0
        pid, state = gm.pid, gm.dir
        assert gm.address == f"127.0.0.1:{gm.port}" and _listening_only_on_loopback(gm.port)
    assert not alive(pid) and not state.exists()


def _listening_only_on_loopback(port):
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, st = line.split()[1], line.split()[3]
        if st == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            return local.split(":")[0] == "0100007F"  # 127.0.0.1, little-endian hex
    return False


def test_perl_gearmand_that_cannot_start_raises_with_its_output():
    with pytest.raises(ServerError, match="Invalid value passed in wakeup option"):
        PerlGearmand(extra_args=["--wakeup=-5"]).start()


def test_stop_leaves_no_process_and_close_removes_state():
    for server in (Gearmand(), PerlGearmand(), Redis(), MariaDB()):
        with server:
            pid = server.pid
            assert alive(pid)
            server.stop()
            assert not alive(pid) and not server.running
            server.start()  # start again after stop
            server.kill(signal.SIGKILL)
            assert not alive(server.pid)
            server.restart()  # after a crash
            assert alive(server.pid)
        assert not server.dir.exists() and not alive(server.pid)


def test_failed_start_raises_with_log_tail():
    with pytest.raises(ServerError, match="unknown option '--no-such-option'"):
        MariaDB(extra_args=["--no-such-option"]).start()
    with pytest.raises(ServerError, match="exited with code"):
        Gearmand(extra_args=["--no-such-option"]).start()


def test_taken_port_moves_before_first_start_only():
    gm = Gearmand()
    with socket.socket() as squatter:
        squatter.bind((gm.host, gm.port))
        squatter.listen()
        taken = gm.port
        with gm:
            assert gm.port != taken
            gm.stop()
            with socket.socket() as second:
                second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                second.bind((gm.host, gm.port))
                second.listen()
                with pytest.raises(ServerError, match="taken by another process"):
                    gm.start()


def test_servers_and_state_die_with_a_killed_parent():
    script = ("import sys, time; sys.path.insert(0, sys.argv[1]);"
              "from pygen.sandbox import Gearmand, Redis;"
              "g, r = Gearmand().start(), Redis().start();"
              "print(g.pid, r.pid, g.dir.parent, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script, str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        *pids, root = parent.stdout.readline().split()
        pids = [int(p) for p in pids]
        assert len(pids) == 2 and all(alive(p) for p in pids)
    finally:
        parent.kill()
        parent.wait()
    assert all(wait_dead(p) for p in pids)
    assert Path(root).exists()  # atexit never ran: the next process sweeps it
    sandbox.server._sweep_stale()
    assert not Path(root).exists()
