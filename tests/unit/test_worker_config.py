"""gman-udf worker's options -> WorkerConfig (pygen/sync/worker_cli.py): what is refused before
anything starts, and what the loop is given."""
import pytest

from pygen.sync import plan
from tests.support.worker_fakes import TABLE, config_for


@pytest.mark.parametrize("argv, tables, message", [
    (["--consistency", "committed"], TABLE, "--consistency committed needs --mysql"),
    ([], None, "give --tables"),
    ([], "*,shop.data", "--tables"),
    (["--max-future-skew", "-1"], TABLE, "--max-future-skew"),
    (["--max-future-skew", "nan"], TABLE, "--max-future-skew"),
    (["--mysql", "http://h/db"], TABLE, "expected mysql://"),
    (["--reconcile", "shop.data"], TABLE, "--reconcile needs --mysql"),
    (["--redis", "http://h:1/0"], TABLE, "unknown scheme"),
    (["--batch", "0"], TABLE, "--batch and --processes"),
    (["--processes", "0"], TABLE, "--batch and --processes"),
    (["--waiters", "-1"], TABLE, "--waiters"),
    (["--lock-wait", "0"], TABLE, "--lock-wait"),
    (["--key-template", "x:{"], TABLE, "key template"),
    (["--ttl", "0"], TABLE, "ttl"),
])
def test_refused_before_anything_starts(argv, tables, message):
    with pytest.raises(ValueError, match=message):
        config_for(*argv, tables=tables)


def test_what_the_loop_is_given():
    c = config_for("--gearman", "a:1,b:2", "--mode", "hash", "--fields", "id, name", "--ttl", "5",
                   "--batch", "7", "--consistency", "committed", "--mysql", "mysql://u@h/db")
    assert c.gearman == ("a:1", "b:2") and c.batch == 7 and c.committed
    assert c.options == plan.Options(mode="hash", fields=("id", "name"), ttl=5.0)
    assert c.tables == {TABLE: None} and not c.tables_from_triggers
    every = config_for(tables="*")
    assert every.tables is None and not every.tables_from_triggers and not every.committed
    default = config_for("--mysql", "mysql://u@h/db", tables=None)
    assert default.tables_from_triggers
