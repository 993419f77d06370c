"""pygen/sync/waiters.py with fake MySQL connections (a socket pair each, answered when the test
says so): the pool is bounded, a read's outcome (rows,
lock wait timeout, error) reaches done() and notify(), a broken connection is replaced, and
close() ends the reads still waiting (KILL QUERY)."""
import socket
import threading

import MySQLdb
import pytest

from pygen.sync.waiters import TIMEOUT, Waiters


class FakeConn:
    """A query 'WAIT <name>' (sent with send_query) is answered once gate[name] is set: its
    socket turns readable, and read_query_result() returns or raises what results[name]
    holds; every statement is recorded."""
    ids = iter(range(100, 10_000))
    encoding = "utf8"

    def __init__(self, world):
        self.world, self.closed, self.id = world, False, next(self.ids)
        self.mine, self.theirs = socket.socketpair()
        world["conns"].append(self)

    def thread_id(self):
        return self.id

    def fileno(self):
        return self.mine.fileno()

    def literal(self, value):
        return str(value).encode()

    def cursor(self):
        conn = self

        class Cursor:
            def execute(self, sql, params=None):
                conn.world["sql"].append((conn.id, sql, params))
        return Cursor()

    def send_query(self, query):
        sql = query.decode()
        self.world["sql"].append((self.id, sql, None))
        name = sql.split()[1]

        def answer():
            assert self.world["gate"][name].wait(30), "the test never opened this gate"
            self.outcome = self.world["results"][name]
            self.theirs.send(b"!")
        threading.Thread(target=answer, daemon=True).start()

    def read_query_result(self):
        self.mine.recv(1)
        if isinstance(self.outcome, Exception):
            raise self.outcome

    def store_result(self):
        rows = self.outcome

        class Result:
            def fetch_row(self, maxrows):
                assert maxrows == 0
                return rows
        return Result()

    def close(self):
        self.closed = True


@pytest.fixture
def world():
    return {"conns": [], "sql": [], "gate": {}, "results": {}}


def pool(world, size=2):
    notified = threading.Semaphore(0)
    w = Waiters(lambda: FakeConn(world), size, 7, notified.release, idle=30)
    return w, notified


def read(world, w, name, outcome):
    world["gate"][name] = threading.Event()
    world["results"][name] = outcome
    return w.submit(name, "WAIT %s", [name])


def finish(world, notified, name):
    world["gate"][name].set()
    assert notified.acquire(timeout=30)


def test_bounded_and_outcomes_reach_done(world):
    w, notified = pool(world, size=2)
    assert read(world, w, "a", (('{"id": 1}', 5),))
    assert read(world, w, "b", MySQLdb.OperationalError(1205, "Lock wait timeout exceeded"))
    assert not read(world, w, "c", ())  # full: the caller polls instead
    assert w.busy == 2
    finish(world, notified, "a")
    assert w.done() == [("a", (('{"id": 1}', 5),))]
    assert read(world, w, "c", ())  # a place is free again
    finish(world, notified, "b")
    finish(world, notified, "c")
    assert sorted(w.done()) == [("b", TIMEOUT), ("c", ())]
    assert w.busy == 0
    # each connection was set up for bounded, gap-lock-free waits, once
    setup = [sql for _, sql, _ in world["sql"] if sql.startswith("SET")]
    assert setup.count("SET SESSION innodb_lock_wait_timeout = 7") == len(world["conns"]) <= 2
    assert "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED" in setup
    w.close()


def test_a_broken_connection_is_replaced(world):
    w, notified = pool(world, size=1)
    lost = MySQLdb.OperationalError(2013, "Lost connection to server during query")
    assert read(world, w, "a", lost)
    finish(world, notified, "a")
    assert w.done() == [("a", lost)]
    assert world["conns"][0].closed
    assert read(world, w, "b", ())
    finish(world, notified, "b")
    assert w.done() == [("b", ())] and len(world["conns"]) == 2 and not world["conns"][1].closed
    w.close()


def test_close_kills_the_reads_still_waiting(world):
    w, notified = pool(world, size=2)
    assert read(world, w, "a", MySQLdb.OperationalError(1317, "Query execution was interrupted"))

    def started():
        return any(sql == "WAIT a" for _, sql, _ in world["sql"])
    for _ in range(3000):
        if started():
            break
        threading.Event().wait(0.01)
    assert started()
    waiting = next(cid for cid, sql, _ in world["sql"] if sql == "WAIT a")
    w.close()
    assert f"KILL QUERY {waiting}" in [sql for _, sql, _ in world["sql"]]
    assert not read(world, w, "b", ())  # closed: nothing more is taken
    finish(world, notified, "a")  # the killed read ends (here: the test lets it)
    assert [name for name, _ in w.done()] == ["a"]


def test_one_thread_waits_for_many_and_reuses_connections(world):
    w, notified = pool(world, size=50)
    names = [f"r{i}" for i in range(50)]
    for name in names:
        assert read(world, w, name, ((name,),))
    assert not read(world, w, "extra", ())
    assert [t.name for t in threading.enumerate()].count("gman-waiters") == 1
    for name in reversed(names):  # the transactions end in any order
        finish(world, notified, name)
    assert sorted(w.done()) == sorted((name, ((name,),)) for name in names)
    opened = len(world["conns"])
    assert opened == 50
    for name in ("again1", "again2"):
        assert read(world, w, name, ())
        finish(world, notified, name)
    assert len(world["conns"]) == opened  # idle connections are taken again
    w.close()


def test_a_read_without_an_answer_fails_after_its_lock_wait(world, monkeypatch):
    import pygen.sync.waiters as waiters
    monkeypatch.setattr(waiters, "MARGIN", 0.2)
    notified = threading.Semaphore(0)
    w = Waiters(lambda: FakeConn(world), 1, 0, notified.release, idle=30)
    assert read(world, w, "a", ())  # its gate never opens
    assert notified.acquire(timeout=30)
    [(name, outcome)] = w.done()
    assert name == "a" and isinstance(outcome, TimeoutError)
    assert world["conns"][0].closed  # not taken again: the network, not a lock
    world["gate"]["a"].set()
    w.close()


def test_opening_a_connection_does_not_hold_up_the_others(world):
    slow, opened = threading.Event(), []

    def connect():
        if opened:  # every connection after the first opens only when the test says so
            assert slow.wait(30)
        opened.append(1)
        return FakeConn(world)
    notified = threading.Semaphore(0)
    w = Waiters(connect, 2, 7, notified.release, idle=30)
    assert read(world, w, "a", ())
    finish(world, notified, "a")  # its connection is idle now
    assert w.done() == [("a", ())]
    assert read(world, w, "b", (("b",),))  # takes the idle connection
    assert read(world, w, "c", (("c",),))  # needs a new one, still opening
    finish(world, notified, "b")
    assert w.done() == [("b", (("b",),))]
    slow.set()
    finish(world, notified, "c")
    assert w.done() == [("c", (("c",),))]
    w.close()
