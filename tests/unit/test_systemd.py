"""`gman-udf systemd`: the worker's unit and gearmand's drop-in, checked line by line and by
`systemd-analyze verify` (package systemd, in .ci/run); and the worker's secrets taken from the
environment (GMAN_UDF_MYSQL, GMAN_UDF_REDIS), which the unit's EnvironmentFile sets."""
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pygen import cli
from pygen.ops import systemd

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_GEARMAND_UNIT = Path("/lib/systemd/system/gearman-job-server.service")
WORKER_ARGS = ["--gearman", "g1:4730,g2:4730", "--processes", "4", "--consistency", "committed",
               "--metrics-port", "9108"]


def gman(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "pygen.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          env=env)


def sections(text):
    """{section: [(key, value), ...]} in file order; comments and blank lines dropped."""
    out, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = out.setdefault(line.strip("[]"), [])
            continue
        key, value = line.split("=", 1)
        current.append((key, value))
    return out


def values(unit, section, key):
    return [v for k, v in unit[section] if k == key]


@pytest.fixture(scope="module")
def worker_unit():
    proc = gman("systemd", "--worker", *WORKER_ARGS)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_worker_unit_is_hardened(worker_unit):
    unit = sections(worker_unit)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = dict(unit["Service"])
    for key, value in {"Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "PrivateTmp": "yes", "DynamicUser": "yes", "CapabilityBoundingSet": "",
                       "EnvironmentFile": systemd.ENV_FILE, "KillSignal": "SIGTERM"}.items():
        assert service.get(key) == value, (key, service.get(key))
    assert "User" not in service
    assert values(unit, "Install", "WantedBy") == ["multi-user.target"]
    assert "StartLimitIntervalSec" in dict(unit["Unit"])  # keeps restarting while a server is down


def test_worker_unit_runs_the_worker_with_its_options_and_no_secret(worker_unit):
    (exec_start,) = values(sections(worker_unit), "Service", "ExecStart")
    words = shlex.split(exec_start)
    assert Path(words[0]).is_absolute() and Path(words[0]).exists(), words[0]
    assert words[words.index("worker") + 1:] == WORKER_ARGS
    assert "--mysql" not in words and "--redis" not in words and "@" not in exec_start


@pytest.mark.parametrize("secret", [["--mysql", "mysql://app:s3cret@db/app"], ["--mysql=mysql://app:s3cret@db/app"],
                                    ["--redis", "redis://:s3cret@r:6379/0"], ["--redis=redis://:s3cret@r:6379/0"]])
def test_secrets_on_the_command_line_are_refused(secret):
    proc = gman("systemd", "--worker", "--gearman", "g1:4730", *secret)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "environment file" in proc.stderr and "s3cret" not in proc.stderr


@pytest.mark.parametrize("bad, message", [
    ([], "required: --gearman"),
    (["--gearman", "g:1", "--processes", "two"], "invalid int value"),
    (["--gearman", "g:1", "--no-such-option"], "unrecognized arguments"),
    (["--gearman", "g:1", "--mys", "mysql://app:s3cret@db/app"], "unrecognized arguments"),  # no abbreviation
])
def test_bad_worker_options_fail_at_render_time(bad, message):
    proc = gman("systemd", "--worker", *bad)
    assert proc.returncode == 2 and proc.stdout == "" and message in proc.stderr, proc.stderr
    assert proc.stderr.startswith("gman-udf systemd: ")


def test_user_and_env_file_and_exec():
    proc = gman("systemd", "--user", "gman", "--env-file", "/etc/x/w.env", "--exec", "/opt/gman/bin/gman-udf",
                "--worker", "--gearman", "g:1")
    assert proc.returncode == 0, proc.stderr
    service = dict(sections(proc.stdout)["Service"])
    assert (service["User"], service["Group"], service["EnvironmentFile"]) == ("gman", "gman", "/etc/x/w.env")
    assert "DynamicUser" not in service
    assert service["ExecStart"] == "/opt/gman/bin/gman-udf worker --gearman g:1"


@pytest.mark.parametrize("arg, word", [
    ("{table}:{key}", "{table}:{key}"), ("a%b", "a%%b"), ("$HOME", "$$HOME"), ("a b", '"a b"'),
    ('q"x', '"q\\"x"'), ("back\\slash", '"back\\\\slash"'), ("", '""'),
])
def test_exec_start_quoting(arg, word):
    """systemd expands %-specifiers and $VARIABLES in ExecStart: an option value keeps its text."""
    assert systemd.quote(arg) == word


def analyze_verify(path):
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze missing: apt-get install systemd (.ci/run)"
    return subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=60)


def test_worker_unit_passes_systemd_analyze_verify(worker_unit, tmp_path):
    path = tmp_path / "gman-udf-worker.service"
    path.write_text(worker_unit)
    proc = analyze_verify(path)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    # verify reports a bad value only as a warning: the empty output above is what counts.
    path.write_text(worker_unit.replace("ProtectSystem=strict", "ProtectSystem=stric"))
    proc = analyze_verify(path)
    assert "protect system value" in (proc.stdout + proc.stderr).lower()


def test_gearmand_drop_in(tmp_path):
    proc = gman("systemd", "--gearmand")
    assert proc.returncode == 0, proc.stderr
    unit = sections(proc.stdout)
    assert set(unit) == {"Service"}
    starts = values(unit, "Service", "ExecStart")
    assert starts[0] == "" and len(starts) == 2  # the empty one clears Debian's ExecStart
    assert f"--hashtable-buckets={systemd.HASHTABLE_BUCKETS}" in starts[1].split()
    assert "$PARAMS" in starts[1].split()  # /etc/default/gearman-job-server still applies
    assert gman("systemd", "--gearmand", "--hashtable-buckets", "0").returncode == 2

    # Debian's unit with the drop-in applied (a drop-in is read as if appended to the unit).
    debian = DEBIAN_GEARMAND_UNIT.read_text()
    assert f"PIDFile={systemd.GEARMAND_PIDFILE}" in debian and f"--pid-file={systemd.GEARMAND_PIDFILE}" in starts[1]
    combined = tmp_path / "gearman-job-server.service"
    combined.write_text(debian + "\n" + proc.stdout)
    proc = analyze_verify(combined)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


# ---- the worker reads its secrets from the environment -------------------------------------

def test_worker_takes_dsn_and_redis_url_from_the_environment(monkeypatch):
    monkeypatch.setenv("GMAN_UDF_MYSQL", "mysql://app:s3cret@db:3306/app")
    monkeypatch.setenv("GMAN_UDF_REDIS", "redis://:s3cret@r:6379/2")
    args = cli.build_parser().parse_args(["worker", "--gearman", "g:1"])
    assert (args.mysql, args.redis) == ("mysql://app:s3cret@db:3306/app", "redis://:s3cret@r:6379/2")
    args = cli.build_parser().parse_args(["worker", "--gearman", "g:1", "--mysql", "mysql://o@h/d",
                                          "--redis", "redis://h:1/0"])
    assert (args.mysql, args.redis) == ("mysql://o@h/d", "redis://h:1/0")  # the command line wins
    args = cli.build_parser().parse_args(["reconcile", "--table", "d.t"])
    assert (args.mysql, args.redis) == ("mysql://app:s3cret@db:3306/app", "redis://:s3cret@r:6379/2")


def test_worker_defaults_without_the_environment(monkeypatch):
    monkeypatch.delenv("GMAN_UDF_MYSQL", raising=False)
    monkeypatch.delenv("GMAN_UDF_REDIS", raising=False)
    args = cli.build_parser().parse_args(["worker", "--gearman", "g:1"])
    assert (args.mysql, args.redis) == (None, "redis://127.0.0.1:6379/0")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["reconcile", "--table", "d.t"])  # still required there
