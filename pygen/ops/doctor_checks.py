"""The checks of `gman-udf doctor` (pygen/ops/doctor.py): each looks at one part of a live setup and
returns Check(s) saying what it found and, when it is not right, what to do.

Each takes what it looks at (a cursor, an address, a URL) and never raises for the state it
reports: a server that does not answer is a "fail" Check, not an exception.
"""
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from pygen import mysql
from pygen.gearman import admin as gearman_admin
from pygen.plugin import catalog, install, sqlgen
from pygen.sync import schema, triggers

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
CONFIG = "gman_udf.cnf"
# gearmand's default hash table (991 buckets) makes submits ~five-fold slower past this depth.
DEEP_QUEUE = 100_000
DEFAULT_BUCKETS = 991
JOBS_PER_BUCKET = 100


@dataclass
class Check:
    name: str
    status: str          # OK, WARN, FAIL or SKIP
    detail: str
    fix: str = ""

    def as_dict(self) -> dict:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def server_pid(cur) -> Optional[int]:
    """mysqld's pid from its pid file, when this machine can read it."""
    cur.execute("SELECT @@pid_file")
    try:
        return int(Path(mysql.text(cur.fetchone()[0], "replace")).read_text().split()[0])
    except (OSError, ValueError, IndexError, TypeError):
        return None


def process_environ(pid: Optional[int]) -> Optional[Dict[str, str]]:
    """The environment a local process started with; None when we may not read it."""
    if pid is None:
        return None
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return dict(item.split("=", 1) for item in raw.decode("utf-8", "replace").split("\0") if "=" in item)


# ---- the library and its functions -----------------------------------------------------------

def check_library(cur, plugin_dir: str, local: bool, shipped: Path) -> Check:
    target = Path(plugin_dir) / catalog.LIBRARY
    want = sha256(shipped)
    fix = "gman-udf install (copies this package's library and registers it)"
    if not local:
        return Check("library", WARN, f"the server is on another machine: cannot compare {target} with {shipped}",
                     f"on the database host, `sha256sum {target}` must print {want}")
    if not target.is_file():
        return Check("library", FAIL, f"no {catalog.LIBRARY} in plugin_dir {plugin_dir}", fix)
    try:
        have = sha256(target)
    except OSError as e:
        return Check("library", WARN, f"cannot read {target}: {e.strerror}", f"run doctor as a user that can read {target}")
    if have != want:
        return Check("library", FAIL, f"{target} is another build (sha256 {have[:12]}, this package's {want[:12]})", fix)
    if install.server_runs_file(cur, plugin_dir) is False:
        return Check("library", FAIL, f"{target} is this package's build but the server still runs a replaced one",
                     "restart the server")
    return Check("library", OK, f"{target} is this package's build (sha256 {want[:12]})")


def check_functions(cur, version: str) -> Check:
    server = sqlgen.Server.parse(version)
    have = install.registered_functions(cur)
    missing, foreign, wrong = [], [], []
    for fn in sqlgen.functions_for(server):
        if fn.name not in have:
            missing.append(fn.name)
            continue
        dl, ret, kind = have[fn.name]
        if dl != catalog.LIBRARY:
            foreign.append(f"{fn.name} ({dl})")
        elif ret != sqlgen.RET_CODES[fn.returns] or (kind == "aggregate") != fn.aggregate:
            wrong.append(fn.name)
    problems = [f"{label}: {', '.join(names)}" for label, names in
                (("not registered", missing), ("from another library", foreign), ("registered differently", wrong))
                if names]
    if problems:
        return Check("functions", FAIL, "; ".join(problems), "gman-udf install")
    return Check("functions", OK, f"all {len(sqlgen.functions_for(server))} catalog functions registered from "
                                  f"{catalog.LIBRARY}")


# ---- the plugin's configuration --------------------------------------------------------------

def parse_config(text: str) -> Dict[str, str]:
    """`key = value` lines as udf/gm_config.c reads them ('#'/';' comments, [sections] ignored)."""
    out = {}
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in "#;[" or "=" not in s:
            continue
        key, value = s.split("=", 1)
        key = key.strip()
        # keys are case-insensitive, the function of a servers.<function> route is not
        key = "servers." + key[8:] if key.lower().startswith("servers.") else key.lower()
        out[key] = value.strip()
    return out


def check_config(plugin_dir: str, local: bool, environ: Optional[Dict[str, str]],
                 function: str = triggers.DEFAULT_FUNCTION) -> Tuple[Check, List[str]]:
    """The plugin's configuration as the server reads it, and the job servers it names for
    function (its `servers.<function>` route, else `servers`)."""
    if not local:
        return Check("config", WARN, "the server is on another machine: cannot read its gman_udf.cnf",
                     f"on the database host, {plugin_dir}/{CONFIG} should hold `servers = ...` and `lock = 1`"), []
    env = environ or {}
    path = Path(env.get("GMAN_UDF_CONFIG") or Path(plugin_dir) / CONFIG)
    try:
        settings = parse_config(path.read_text())
        where = str(path)
    except OSError:
        settings, where = {}, ""
    for key, value in env.items():  # the environment wins over the file, as in the plugin
        if key.startswith("GMAN_UDF_") and key != "GMAN_UDF_CONFIG":
            settings[key[len("GMAN_UDF_"):].lower()] = value
            where = where or "mysqld's environment"
    route = settings.get(f"servers.{function}") or settings.get("servers", "")
    servers = [s.strip() for s in route.split(",") if s.strip()]
    if not where:
        seen = "" if environ is not None else " (mysqld's environment not readable here)"
        return Check("config", WARN, f"no {path} and no GMAN_UDF_* in mysqld's environment{seen}: servers only "
                                     "from gman_servers_set(), which any SQL user may call",
                     f"write {path} with `servers = HOST:PORT` and `lock = 1`"), servers
    if settings.get("lock", "0").strip() != "1":
        return Check("config", WARN, f"{where}: lock is not 1, so any SQL user may redirect jobs with "
                                     "gman_servers_set()", f"add `lock = 1` to {path}"), servers
    return Check("config", OK, f"{where}: lock = 1, servers = {', '.join(servers) or '(default)'}"), servers


# ---- gearmand --------------------------------------------------------------------------------

def split_address(address: str) -> Tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():  # a bare host: gearmand's port
        return address.strip(), 4730
    return host.strip("[]"), int(port)


def admin(address: str, command: str, timeout: float = 3.0) -> str:
    """One text admin command to the gearmand at host[:port]; the reply without its '.' line."""
    return gearman_admin.admin(*split_address(address), command, timeout)


def parse_status(text: str) -> Dict[str, Tuple[int, int, int]]:
    """{function: (queued, running, available workers)} from the admin `status` reply."""
    out = {}
    for line in text.splitlines():
        parts = line.rsplit("\t", 3)
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            out[parts[0]] = (int(parts[1]), int(parts[2]), int(parts[3]))
    return out


def hashtable_buckets(address: str) -> Optional[int]:
    """--hashtable-buckets of a gearmand on this machine (admin getpid, then its command line);
    DEFAULT_BUCKETS when it was started without; None when we cannot tell."""
    try:
        reply = admin(address, "getpid")
        pid = int(reply.split()[1]) if reply.startswith("OK ") else None
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if pid else None
    except (OSError, ValueError, IndexError):
        return None
    if not args or "gearmand" not in os.path.basename(args[0]):
        return None  # another machine (or pid namespace) with the same pid
    for i, a in enumerate(args):
        m = re.fullmatch(r"--hashtable-buckets=(\d+)", a)
        if m:
            return int(m.group(1))
        if a == "--hashtable-buckets" and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
    return DEFAULT_BUCKETS


def check_gearmand(address: str, function: str) -> List[Check]:
    """Reachable, its queue for function; its hash table for that depth; workers registered."""
    try:
        status = parse_status(admin(address, "status"))
    except OSError as e:
        return [Check(f"gearmand {address}", FAIL, f"unreachable: {e}",
                      f"start gearmand on {address} (systemctl start gearman-job-server), or fix --gearman/servers")]
    queued, running, workers = status.get(function, (0, 0, 0))
    out = [Check(f"gearmand {address}", OK, f"reachable; {function}: {queued} queued, {running} running")]
    buckets = hashtable_buckets(address)
    fix = "install the drop-in of `gman-udf systemd --gearmand` (--hashtable-buckets=100003) and restart gearmand"
    # ~100 jobs a bucket is where the default table (991 buckets, ~100,000 jobs) turned slow
    if queued > DEEP_QUEUE and (buckets is None or buckets * JOBS_PER_BUCKET < queued):
        known = {None: "an unknown number of (not on this machine)", DEFAULT_BUCKETS: "the default 991"}.get(
            buckets, str(buckets))
        out.append(Check(f"hashtable {address}", WARN, f"{queued} jobs queued with {known} hash buckets: submits are "
                                                       "about five-fold slower past ~100 jobs a bucket", fix))
    else:
        size = f"{buckets} buckets" if buckets else "bucket count unknown (not on this machine)"
        out.append(Check(f"hashtable {address}", OK, f"{size} for {queued} queued jobs"))
    if workers < 1:
        out.append(Check(f"workers {address}", FAIL, f"no worker registered for {function}",
                         f"start `gman-udf worker --gearman {address} --function {function} ...` "
                         "(a unit: gman-udf systemd --worker ...)"))
    else:
        out.append(Check(f"workers {address}", OK, f"{workers} workers registered for {function}"))
    return out


# ---- Redis -----------------------------------------------------------------------------------

def check_redis(client, url_shown: str) -> Check:
    try:
        client.ping()
    except Exception as e:  # redis-py's errors, OSError
        return Check("redis", FAIL, f"{url_shown}: {e}", "start Redis, or fix --redis (password, db, TLS)")
    return Check("redis", OK, f"{url_shown} answers PING")


# ---- triggers --------------------------------------------------------------------------------

def _bodies(t: schema.TableSchema, function: str, strict: bool) -> List[str]:
    return [_squash(create.split(" FOR EACH ROW\n", 1)[1]) for _, create in triggers.statements(t, function, strict)]


def _squash(sql: str) -> str:
    return " ".join(sql.split())


def split_table_columns(text: str) -> Tuple[str, Optional[List[str]]]:
    """'db.t' -> ('db.t', None); 'db.t:a,b' -> ('db.t', ['a', 'b']): the columns given to
    `gman-udf trigger --columns` (a trigger cannot tell whether it was made with a subset)."""
    table, sep, cols = text.rpartition(":")
    if not sep or "`" in cols:
        return text, None
    return table, schema.split_names(cols)


def check_triggers(conn, table: str, function: str) -> Check:
    """The table's generated triggers exist and are what `gman-udf trigger` renders from its
    schema now (same function and strictness; every column unless the table is named
    db.t:col,col as with --columns). A column added since they were made is stale too: its
    values never reach Redis."""
    name = f"triggers {table}"
    table, columns = split_table_columns(table)
    try:
        t = schema.read_schema(conn, table, None, columns)
    except schema.SchemaError as e:
        return Check(name, FAIL, str(e), "check --table (db.table[:col,col], or -D db)")
    cur = conn.cursor()
    cur.execute(triggers.SYNCED_SQL.replace("%", "%%") + " AND EVENT_OBJECT_SCHEMA = %s AND EVENT_OBJECT_TABLE = %s",
                (t.schema, t.name))
    found = {mysql.text(r[0], "replace"): mysql.text(r[3], "replace") for r in cur.fetchall()}
    subset = f" --columns {','.join(columns)}" if columns else ""
    fix = f"gman-udf trigger --table {t.qualified}{subset} --function {function} --apply"
    wanted = [triggers.trigger_name(t.name, suffix) for suffix, _ in triggers.EVENTS]
    missing = [n for n in wanted if n not in found]
    if missing:
        return Check(name, FAIL, f"missing {', '.join(missing)}", fix)
    have = [_squash(found[n]) for n in wanted]
    strict = any("SIGNAL SQLSTATE" in body for body in have)
    if have == _bodies(t, function, strict):
        return Check(name, OK, f"{', '.join(wanted)} current with the table's schema"
                               + (" (strict)" if strict else ""))
    sent = set(triggers.synced_tables(cur_rows(found, t), function).get(t.qualified, ()))
    unsent = [c.name for c in t.columns if c.name not in sent]
    why = (f"not sending {', '.join(unsent)} (added since they were generated? a deliberate subset: "
           "name the table db.t:col,col)" if unsent else "the table changed since they were generated "
           f"(or they were edited, or they send another function than {function})")
    return Check(name, FAIL, f"stale: {why}", fix)


def cur_rows(found: Dict[str, str], t: schema.TableSchema):
    """SYNCED_SQL-shaped rows of one table's triggers, for triggers.synced_tables()."""
    return [(n, t.schema, t.name, body) for n, body in found.items()]
