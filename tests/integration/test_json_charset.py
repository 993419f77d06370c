"""The JSON functions' result on MariaDB: typed binary, as every loadable function's string
(MySQL does the same, and refuses it in JSON functions before 8.0.19: see test_mysql_host.py),
and MariaDB's JSON functions and JSON columns take it as it is."""


def test_mariadb_types_the_result_binary_and_its_json_takes_it(sql, table_name):
    text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
    assert text(sql.one("SELECT CHARSET(udf_json_object('é' AS a))")) == "binary"
    assert sql.one("SELECT JSON_VALID(udf_json_object('é' AS a, 2 AS b))") == 1
    assert sql.one("SELECT JSON_EXTRACT(udf_json_object('é' AS a), '$.a')") == '"é"'.encode()
    sql.run(f"CREATE TABLE {table_name} (j JSON)")
    sql.run(f"INSERT INTO {table_name} VALUES (udf_json_object('é' AS a, NULL AS n))")
    assert text(sql.one(f"SELECT j FROM {table_name}")) == '{"a":"é","n":null}'
    assert sql.one(f"SELECT JSON_VALUE(j, '$.a') FROM {table_name}") == "é"
