"""pygen/sync/committed.py's CommittedReader.send/receive with a fake MySQL connection: a row
whose JSON text is exactly the job's is that job's row (not parsed again), any other text is
parsed, a row is matched to a job by the key read from MySQL (never the job's word), and a
query asked for between send() and receive() waits for the one in flight."""
import json

from pygen.sync.committed import CommittedReader, Gone
from pygen.sync.payload import Change, dumps
from pygen.sync.payload import loads as payload_loads

TABLE = "s.t"


class FakeConn:
    """Answers each query with the rows `table` holds for the ids it names (JSON text, as
    udf_json_members renders them: bytes); every statement is recorded."""
    encoding = "utf8"

    def __init__(self, table):
        self.table, self.log, self.answer = table, [], None

    def literal(self, value):
        return json.dumps(value).encode()

    def get_server_info(self):
        return "10.11.6-MariaDB"

    def _run(self, query):
        sql = query.decode()
        self.log.append(sql)
        if "gman_stamp" in sql:
            return ((42,),)
        ids = [int(x) for x in sql.split(" IN ", 1)[1].strip("()").replace("(", "").replace(")", "").split(", ")]
        return tuple((self.table[i].encode(),) for i in sorted(set(ids)) if i in self.table)

    def send_query(self, query):
        assert self.answer is None, "a query is already in flight"
        self.answer = self._run(query)
        self.log.append("(sent)")

    def read_query_result(self):
        self.log.append("(read)")

    def query(self, query):
        self.answer = self._run(query)

    def store_result(self):
        rows, self.answer = self.answer, None

        class Result:
            def fetch_row(self, maxrows):
                return rows
        return Result()

    def cursor(self):
        conn = self

        class Cursor:
            def execute(self, sql, params=()):
                assert conn.answer is None, "commands out of sync: a query is in flight"
                self.rows = conn._run((sql % tuple(params)).encode())

            def fetchone(self):
                return self.rows[0]
        return Cursor()


def reader(table):
    r = CommittedReader("mysql://u@localhost/s")
    r.conn = FakeConn(table)
    r._columns[TABLE] = (float("inf"), frozenset({"id", "val"}), frozenset())  # no information_schema read
    return r


def upsert(key, row):
    return Change("upsert", TABLE, {"id": key}, 1, row)


def text(row):
    return dumps(row).encode()


ROW1 = {"id": 1, "val": "a"}


def test_the_same_text_is_the_jobs_row_and_other_text_is_parsed():
    r = reader({1: '{"id":1,"val":"a"}', 2: '{"id":2,"val":"committed"}'})
    jobs = [upsert(1, ROW1), upsert(2, {"id": 2, "val": "open"}), upsert(3, {"id": 3, "val": "x"})]
    got = r.receive(r.send(jobs), [text(c.row) for c in jobs])
    assert got[0] is jobs[0].row  # not parsed: the text says it is that row
    assert got[1] == {"id": 2, "val": "committed"}  # parsed: what MySQL holds
    assert got[2] is None  # no such row
    assert r.read(jobs) == [ROW1, {"id": 2, "val": "committed"}, None]  # without expect: the same rows, parsed


def test_a_row_goes_to_the_job_of_its_own_key():
    """A forged job for key 5 carrying a copy of row 7: row 7's text matches its image, but row 7
    is not the job's row; MySQL has no row 5."""
    r = reader({7: '{"id":7,"val":"a"}'})
    forged, real = upsert(5, {"id": 7, "val": "a"}), upsert(7, {"id": 7, "val": "a"})
    got = r.receive(r.send([forged, real]), [text(forged.row), text(real.row)])
    assert got[0] is None and got[1] is real.row


def test_two_jobs_of_one_row():
    r = reader({1: '{"id":1,"val":"b"}'})
    old, new = upsert(1, ROW1), upsert(1, {"id": 1, "val": "b"})
    got = r.receive(r.send([new, old]), [text(new.row), text(old.row)])
    assert got[0] is new.row and got[1] == {"id": 1, "val": "b"}
    got = r.receive(r.send([old, new]), [text(old.row), text(new.row)])
    assert got == [{"id": 1, "val": "b"}] * 2  # once parsed, the parsed row serves the next job


def test_text_that_does_not_show_the_key_is_parsed():
    r = reader({1: '{"val":"a","id":1}'})
    job = Change("upsert", TABLE, {"id": 1}, 1, {"val": "a", "id": 1})  # the key is not the first member
    assert r.receive(r.send([job]), [b'{"val":"a","id":1}']) == [{"val": "a", "id": 1}]


def test_unparsable_text_is_refused_as_before():
    r = reader({1: '{"id":1,"val":'})
    (got,) = r.read([upsert(1, ROW1)])
    assert isinstance(got, Gone)


def test_a_query_between_send_and_receive_waits_for_the_one_in_flight():
    r = reader({1: '{"id":1,"val":"a"}'})
    reading = r.send([upsert(1, ROW1)])
    assert r.stamp() == 42  # the read in flight is taken in first
    assert r.receive(reading) == [ROW1]
    log = r.conn.log
    assert log.index("(read)") < next(i for i, sql in enumerate(log) if "gman_stamp" in sql)


def test_loads_of_dumps_is_the_row():
    """What the shortcut rests on: payload.loads(payload.dumps(row)) == row for the rows jobs carry."""
    for row in ({"id": 1, "n": payload_loads("12.50"), "t": "é\n\"", "b": True, "z": None},
                {"id": -3, "j": {"$base64": "AA=="}, "l": [1, "x", payload_loads("1e5")]}):
        assert payload_loads(dumps(row)) == row
