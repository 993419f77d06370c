"""`gman-udf demo`: the whole pipeline on throwaway servers, live.

Starts a MariaDB, a gearmand and a Redis of its own (temp dirs, free loopback ports), installs
the plugin (configured by a locked gman_udf.cnf), creates a table with generated triggers,
starts a worker in committed mode, runs a stream of INSERT/UPDATE/DELETE (and one rolled-back
transaction) while Redis follows, prints a verify summary, and stops everything on exit or
Ctrl-C.
"""
import contextlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pygen.plugin import install
from pygen.plugin.library import library_path
from pygen.sandbox import Gearmand, MariaDB, Redis
from pygen.sync import schema, triggers

TABLE = "demo.data"


def _say(text=""):
    print(text, flush=True)


def _cli(*args):
    return [sys.executable, "-m", "pygen.cli", *args]


class Stream(threading.Thread):
    """INSERT/UPDATE/DELETE at about `rate` statements a second, each its own transaction."""

    def __init__(self, db, rate, seconds):
        super().__init__(daemon=True)
        self.db, self.rate, self.seconds = db, rate, seconds
        self.counts = {"insert": 0, "update": 0, "delete": 0}
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by the main thread
            self.error = e

    def _run(self):
        conn = self.db.connect()
        cur = conn.cursor()
        rng = random.Random(7)
        next_id = 1001
        end = time.monotonic() + self.seconds
        tick = 1.0 / self.rate
        while time.monotonic() < end:
            t0 = time.monotonic()
            op = rng.random()
            if op < 0.2:
                cur.execute(f"INSERT INTO {TABLE} (id, volume, name, note) VALUES (%s, %s, %s, 'crème')",
                            (next_id, rng.randint(1, 10**6) / 100, f"item {next_id}"))
                next_id += 1
                self.counts["insert"] += 1
            elif op < 0.9:
                cur.execute(f"UPDATE {TABLE} SET volume = %s WHERE id = %s",
                            (rng.randint(1, 10**6) / 100, rng.randint(2, 1000)))
                self.counts["update"] += cur.rowcount
            else:
                cur.execute(f"DELETE FROM {TABLE} WHERE id = %s", (rng.randint(2, next_id - 1),))
                self.counts["delete"] += cur.rowcount
            time.sleep(max(0.0, tick - (time.monotonic() - t0)))
        conn.close()


class LagProbe(threading.Thread):
    """Every 100 ms: update row 1000 to a fresh value, commit, and time until Redis has it."""

    def __init__(self, db, redis, stop):
        super().__init__(daemon=True)
        self.db, self.redis, self.stop = db, redis, stop
        self.lags = []

    def run(self):
        cur = self.db.connect().cursor()
        n = 0
        while not self.stop.is_set():
            n += 1
            name = f"probe {n}"
            cur.execute(f"UPDATE {TABLE} SET name = %s WHERE id = 1000", (name,))
            committed = time.monotonic()
            while time.monotonic() - committed < 5 and not self.stop.is_set():
                raw = self.redis.get(f"{TABLE}:1000")
                if raw and json.loads(raw).get("name") == name:
                    self.lags.append((time.monotonic() - committed) * 1000)
                    break
                time.sleep(0.0002)
            self.stop.wait(0.1)


def _queued(gm):
    return sum(q + r for q, r, _ in gm.status().values())


def run(args) -> int:
    with contextlib.ExitStack() as stack:
        _say("== gman-udf demo: MySQL -> Gearman -> Redis on throwaway servers ==")
        db, gm, rd = _start_servers(stack)
        conn = db.connect()
        _install_and_show(conn)
        dsn = f"mysql://root@localhost/demo?socket={db.socket}"
        worker = subprocess.Popen(_cli("worker", "--gearman", gm.address, "--redis", rd.url,
                                       "--consistency", "committed", "--mysql", dsn, "--log-level", "WARNING"))
        stack.callback(_stop, worker)
        proc = subprocess.run(_cli("load", "--table", TABLE, "--redis", rd.url, "-S", db.socket, "-u", "root"),
                              capture_output=True, text=True)
        _say(f"initial load: {(proc.stdout or proc.stderr).strip()}")
        redis = rd.client()
        lags = _stream_changes(stack, conn, db, gm, redis, args.rate, args.seconds)
        if lags:
            p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
            _say(f"commit -> visible in Redis over {len(lags)} probe updates: "
                 f"p50 {statistics.median(lags):.1f} ms, p99 {p99:.1f} ms")
        rolled = redis.get(f"{TABLE}:1")
        _say(f"row 1 in Redis after the rolled-back transaction: {rolled.decode() if rolled else None}")
        proc = subprocess.run(_cli("verify", "--table", TABLE, "--redis", rd.url, "-S", db.socket, "-u", "root"),
                              capture_output=True, text=True)
        _say("verify: " + (proc.stdout + proc.stderr).strip().replace("\n", "\n        "))
        ok = proc.returncode == 0 and (rolled is None or b"ROLLED BACK" not in rolled)
        _say("== in sync ==" if ok else "== NOT in sync ==")
        _say("stopping the worker, Redis, gearmand and MariaDB")
        return 0 if ok else 1


def _start_servers(stack):
    plugin_dir = Path(tempfile.mkdtemp(prefix="gman-demo-plugin-"))
    stack.callback(shutil.rmtree, plugin_dir, True)
    gm = stack.enter_context(Gearmand())
    rd = stack.enter_context(Redis())
    # The server list lives in gman_udf.cnf next to the library, locked against SQL users.
    (plugin_dir / "gman_udf.cnf").write_text(f"servers = {gm.address}\nlock = 1\n")
    db = stack.enter_context(MariaDB(plugin_dir=plugin_dir))
    _say(f"started MariaDB {db.version} on {db.host}:{db.port}, gearmand on {gm.address}, Redis on {rd.url}")
    return db, gm, rd


def _install_and_show(conn) -> None:
    """The plugin installed, the demo table with its rows and triggers, a few rows as JSON."""
    library = library_path()
    rep = install.install(conn, library, local=True)
    _say(f"installed {library.name} into {rep.plugin_dir}: {len(rep.registered)} functions")
    cur = conn.cursor()
    cur.execute("CREATE DATABASE demo")
    cur.execute("USE demo")
    cur.execute(f"CREATE TABLE {TABLE} (id INT PRIMARY KEY, volume DECIMAL(20,4), name VARCHAR(100),"
                " note TEXT CHARACTER SET latin1)")
    cur.execute(f"INSERT INTO {TABLE} SELECT seq, seq * 1.5, CONCAT('item ', seq), 'café' FROM seq_1_to_1000")
    cur.execute(f"SELECT udf_json_object(id, volume, name, note) FROM {TABLE} WHERE id <= 3")
    for (doc,) in cur.fetchall():
        _say(f"  udf_json_object(id, volume, name, note) -> {doc.decode()}")
    _say("  (note is a latin1 column: its bytes are not UTF-8, so they travel as $base64;"
         " generated triggers send CONVERT(note USING utf8mb4) instead)")
    t = schema.read_schema(conn, TABLE)
    names = triggers.apply(conn, t)
    _say(f"created triggers {', '.join(names)} (gman-udf trigger --table {TABLE} --apply)")


def _stream_changes(stack, conn, db, gm, redis, rate, seconds):
    """Changes streamed for `seconds`, one rolled back, until the queue is drained: the probe's
    commit -> Redis lags (ms), sorted."""
    stream = Stream(db, rate, seconds)
    probe_stop = threading.Event()
    probe = LagProbe(db, redis, probe_stop)
    stack.callback(probe_stop.set)
    _say(f"streaming INSERT/UPDATE/DELETE for {seconds} s at ~{rate}/s (worker in committed mode) ...")
    stream.start()
    probe.start()
    # One transaction that is rolled back: its job is queued by the trigger, but the
    # committed-mode worker never lets its value into Redis.
    cur = conn.cursor()
    cur.execute("START TRANSACTION")
    cur.execute(f"UPDATE {TABLE} SET name = 'ROLLED BACK' WHERE id = 1")
    time.sleep(0.3)
    cur.execute("ROLLBACK")
    last, start = 0, time.monotonic()
    while stream.is_alive():
        stream.join(1.0)
        done = sum(stream.counts.values())
        lag = f"{statistics.median(probe.lags):.1f} ms" if probe.lags else "-"
        _say(f"  t={time.monotonic() - start:4.1f}s  changes {done:6d} ({done - last:4d}/s)  "
             f"jobs waiting {_queued(gm):5d}  Redis keys {redis.dbsize():6d}  commit->Redis p50 {lag}")
        last = done
    if stream.error:
        raise stream.error
    deadline = time.monotonic() + 30
    while _queued(gm) and time.monotonic() < deadline:
        time.sleep(0.2)
    probe_stop.set()
    probe.join()
    return sorted(probe.lags)


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
