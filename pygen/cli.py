"""The `gman-udf` command."""
import argparse
import dataclasses
import getpass
import sys

from pygen import mysql


def _conn_opts(args):
    return mysql.ConnOptions.from_args(args)


def _registration_opts(args):
    """install/uninstall connect with no default database (-D is ignored): registration needs
    none, and without one DROP FUNCTION can only ever reach a loadable function, never a
    stored function of the same name."""
    return dataclasses.replace(_conn_opts(args), database=None)


def cmd_sql(args) -> int:
    from pygen.plugin import sqlgen
    server = sqlgen.Server.parse(args.server_version) if args.server_version else sqlgen.PORTABLE
    sys.stdout.write(sqlgen.uninstall_sql(server) if args.uninstall else sqlgen.install_sql(server))
    return 0


def cmd_install(args) -> int:
    from pathlib import Path

    from pygen.plugin import install
    from pygen.plugin.library import library_path
    library = Path(args.library) if args.library else library_path()
    if not library.is_file():
        raise FileNotFoundError(f"{library}: no such file")
    opts = _registration_opts(args)
    conn = opts.connect()
    try:
        rep = install.install(conn, library, opts.is_local())
    except install.InstallError as e:
        print(f"gman-udf install: {e}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    where = f"{rep.plugin_dir.rstrip('/')}/gman_udf.so"
    print(f"server: {rep.server}")
    print({True: f"copied {library} to {where}", False: f"{where} is up to date",
           None: f"not copied: {rep.instructions}"}[rep.copied])
    print(f"registered {len(rep.registered)} functions: {', '.join(rep.registered)}")
    if rep.reloaded:
        print(f"dropped and created again ({len(rep.dropped)} dropped), so that the server loads this file")
    if rep.runs_new_file is False:
        print(f"gman-udf install: warning: the server still runs the replaced {where} (a statement still "
              "holds one of its functions): restart it to run the new file", file=sys.stderr)
    return 0


def cmd_uninstall(args) -> int:
    from pygen.plugin import install
    conn = _registration_opts(args).connect()
    try:
        rep = install.uninstall(conn)
    finally:
        conn.close()
    print(f"dropped {len(rep.dropped)} functions" + (f": {', '.join(rep.dropped)}" if rep.dropped else ""))
    print(f"the library file stays in {rep.plugin_dir} (remove it once no server process uses it)")
    return 0


def cmd_demo(args) -> int:
    from pygen import demo
    return demo.run(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gman-udf", description="MySQL/MariaDB -> Gearman -> Redis, as loadable functions")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sql", help="print the registration SQL")
    p.add_argument("--server-version", metavar="V",
                   help="render for this server (e.g. 10.11.6-MariaDB, 8.0.36, mariadb); default: portable")
    p.add_argument("--uninstall", action="store_true", help="print the DROP statements instead")
    p.set_defaults(func=cmd_sql)

    for name, func, text in (("install", cmd_install, "copy the library into the server's plugin_dir and register it"),
                             ("uninstall", cmd_uninstall, "drop the functions")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("--help", action="help", help="show this help and exit")
        mysql.add_arguments(p)
        if name == "install":
            p.add_argument("--library", help="the gman_udf.so to install (default: the one in this package)")
        p.set_defaults(func=func)

    # Pipeline commands: each module owns its options (add_arguments) and its run(args).
    from pygen.ops import doctor
    from pygen.sync import reconcile_cli, triggers, verify, worker_cli
    for name, text, add, run in (
            ("worker", "carry syncToRedis jobs from gearmand into Redis", worker_cli.add_arguments, worker_cli.run),
            ("trigger", "render (or --apply) the AFTER INSERT/UPDATE/DELETE triggers of a table",
             triggers.add_arguments, triggers.run),
            ("verify", "compare a table with Redis; --repair fixes the differences", verify.add_arguments, verify.run),
            ("load", "bulk-load a table into Redis (directly or through gearmand)", verify.add_load_arguments,
             verify.run_load),
            ("reconcile", "walk tables at a bounded rate forever, repairing what differs in Redis",
             reconcile_cli.add_arguments, reconcile_cli.run),
            ("doctor", "check a live setup end to end: library, functions, config, gearmand, workers, Redis, "
             "triggers, a canary", doctor.add_arguments, doctor.run)):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("--help", action="help", help="show this help and exit")
        add(p)
        p.set_defaults(func=run)

    from pygen.ops import systemd
    p = sub.add_parser("systemd", help="print a hardened systemd unit for the worker, or a drop-in for gearmand",
                       description="Options before --worker; everything after it is the worker's.")
    systemd.add_arguments(p)
    p.set_defaults(func=systemd.run)

    p = sub.add_parser("demo", help="the whole pipeline on throwaway servers")
    p.add_argument("--seconds", type=float, default=10, help="how long to stream changes (default: %(default)s)")
    p.add_argument("--rate", type=int, default=300, help="changes per second (default: %(default)s)")
    p.set_defaults(func=cmd_demo)
    return ap


def _expected_errors():
    """Errors that are the user's situation (bad password, missing file), not our bug."""
    errors = [OSError, ValueError, RuntimeError]
    try:
        import MySQLdb
        errors.append(MySQLdb.MySQLError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "password", None) == "" and sys.stdin.isatty():
        args.password = getpass.getpass("Enter password: ")  # a bare -p asks, like the mysql client
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except _expected_errors() as e:
        detail = e.args[1] if len(e.args) == 2 and isinstance(e.args[0], int) else e
        print(f"gman-udf {args.command}: {detail}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
