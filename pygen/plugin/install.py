"""Install gman_udf.so into a running server: copy the library, register the functions."""
import filecmp
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from pygen import mysql
from pygen.plugin import catalog, sqlgen


class InstallError(RuntimeError):
    pass


@dataclass
class Report:
    server: str = ""
    plugin_dir: str = ""
    copied: Optional[bool] = None  # True: copied; False: already there; None: could not
    instructions: str = ""
    registered: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    reloaded: bool = False  # every function dropped and created again
    # After a copy: does the server process map exactly the new file? (None: cannot look)
    runs_new_file: Optional[bool] = None


def server_identity(cur):
    cur.execute("SELECT VERSION(), @@plugin_dir")
    version, plugin_dir = cur.fetchone()
    return sqlgen.Server.parse(version), version, plugin_dir


def place_library(library: Path, plugin_dir: str, local: bool) -> Optional[bool]:
    """Copy the library into plugin_dir when we can. Returns True (copied), False (an
    identical copy is already there) or None (not on this machine, or not writable)."""
    target = Path(plugin_dir) / catalog.LIBRARY
    if not local or not Path(plugin_dir).is_dir():
        return None
    if target.exists() and filecmp.cmp(library, target, shallow=False):
        return False
    if not os.access(plugin_dir, os.W_OK):
        return None
    # Never overwrite in place: mysqld may have the old file mapped, and rewriting a mapped
    # library crashes it. A rename gives the new file a new inode; the old mapping lives on.
    fd, tmp = tempfile.mkstemp(prefix=".gman_udf.", dir=plugin_dir)
    os.close(fd)
    try:
        shutil.copyfile(library, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def registered_functions(cur) -> Dict[str, Tuple[str, int, str]]:
    """Every loadable function the server lists: {name: (dl, ret, type)}."""
    cur.execute("SELECT name, dl, ret, type FROM mysql.func")
    return {mysql.text(name): (mysql.text(dl), int(ret), mysql.text(kind)) for name, dl, ret, kind in cur.fetchall()}


def installed_functions(cur) -> List[str]:
    cur.execute("SELECT name FROM mysql.func WHERE dl = %s", (catalog.LIBRARY,))
    return [mysql.text(r[0]) for r in cur.fetchall()]


def server_runs_file(cur, plugin_dir: str) -> Optional[bool]:
    """Whether the server process (on this machine) maps exactly the gman_udf.so now in its
    plugin_dir: True, False (it still runs a replaced one), or None when we cannot look (no
    pid file or /proc access, another machine or pid namespace, nothing mapped)."""
    cur.execute("SELECT @@pid_file")
    pid_file = mysql.text(cur.fetchone()[0])
    target = Path(plugin_dir) / catalog.LIBRARY
    try:
        pid = int(Path(pid_file).read_text().split()[0])
        maps = Path(f"/proc/{pid}/maps").read_text()
        current = target.stat().st_ino
        where = os.path.realpath(plugin_dir)
    except (OSError, ValueError, IndexError, TypeError):
        return None
    inodes = set()
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        path = Path(parts[5].strip().removesuffix(" (deleted)"))
        if path.name == catalog.LIBRARY and os.path.realpath(path.parent) == where:
            inodes.add(int(parts[4]))
    if not inodes:
        return None
    return inodes == {current}


def install(conn, library: Path, local: bool) -> Report:
    cur = conn.cursor()
    server, version, plugin_dir = server_identity(cur)
    rep = Report(server=version, plugin_dir=plugin_dir)
    rep.copied = place_library(library, plugin_dir, local)
    if rep.copied is None:
        rep.instructions = (f"copy {library} to {plugin_dir}/{catalog.LIBRARY} on the database host "
                            "(as the user that owns that directory), then run this command again")
    # A new file (or one we could not compare) is only loaded once every function of the old
    # one is dropped; an identical file leaves the registered functions alone.
    rep.reloaded = rep.copied is not False
    plan = sqlgen.install_plan(server, registered_functions(cur), reload=rep.reloaded)
    try:
        for stmt in plan:
            cur.execute(stmt)
            if stmt.startswith("DROP "):
                rep.dropped.append(stmt.rsplit(" ", 1)[1])
    except Exception as e:
        hint = f"; {rep.instructions}" if rep.instructions else ""
        gone = f" (dropped before the failure: {', '.join(rep.dropped)})" if rep.dropped else ""
        raise InstallError(f"registering the functions failed: {e}{gone}{hint}") from e
    rep.registered = [f.name for f in sqlgen.functions_for(server)]
    # A registered library that the server cannot use should fail here, not in a trigger.
    cur.execute("SELECT udf_json_object(1 AS ok)")
    if cur.fetchone()[0] not in (b'{"ok":1}', '{"ok":1}'):
        raise InstallError("the functions were registered but udf_json_object(1 AS ok) gave a wrong result")
    if rep.copied:
        # The server keeps a replaced file mapped while any function of it is still counted as
        # in use: by a running statement, or (MariaDB 10.11, seen in tests) for good after a
        # statement that passed one a ROW argument (ERROR 1241). Then only a restart loads it.
        rep.runs_new_file = server_runs_file(cur, plugin_dir)
    return rep


def uninstall(conn) -> Report:
    cur = conn.cursor()
    server, version, plugin_dir = server_identity(cur)
    rep = Report(server=version, plugin_dir=plugin_dir)
    for stmt in sqlgen.uninstall_statements(server, installed_functions(cur)):
        cur.execute(stmt)
        rep.dropped.append(stmt.rsplit(" ", 1)[1])
    return rep
