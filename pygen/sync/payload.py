"""The job payload that generated triggers send and the worker reads (pure, no I/O).

A generated trigger sends one JSON object per changed row, rendered by udf_json_object:

    {"op": "upsert", "table": "shop.data", "key": {"id": 7}, "v": 1732345678123456,
     "row": {"id": 7, "volume": 12.5, ...}}
    {"op": "delete", "table": "shop.data", "key": {"id": 7}, "v": 1732345678123999}

- op: "upsert" (INSERT, UPDATE) or "delete".
- table: "schema.table" as the trigger was generated for.
- key: the primary-key columns and their values (composite keys have several).
- v: the row version, gman_stamp() taken inside the trigger, i.e. after the row lock:
  microseconds, strictly increasing within the server, so for one row it follows commit
  order. Missing (None) in payloads not made by our triggers.
- row: the synced columns (upsert only). Column values follow the bytes policy of
  udf/json_buf.h: a JSON string is the UTF-8 text of the value, {"$base64": ...} is bytes
  that were not UTF-8 (latin1 text, BLOBs).

The seeds' trigger shape, a bare udf_json_object(NEW.id AS id, ...), is accepted too: an
upsert with no table and no version, keyed by its "id" member.

parse() refuses (PayloadError) anything else, whatever the bytes: not UTF-8, not JSON
(NaN and Infinity included), nested past the decoder's recursion limit, members of the wrong
type, a table or key text that is not valid Unicode (lone surrogates), key values that are
objects or arrays (but {"$base64"}), bad base64, a version outside 0..2^63-1 (gman_stamp()
is a BIGINT). What parse() returns, plan() (pygen/sync/plan.py) can write or refuses in turn.
"""
import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional


class PayloadError(ValueError):
    """A job whose workload is not a change we understand."""


@dataclass(frozen=True)
class Change:
    op: str                      # "upsert" or "delete"
    table: Optional[str]         # "schema.table", None for the seeds' bare rows
    key: Dict[str, Any]
    version: Optional[int] = None
    row: Optional[Dict[str, Any]] = field(default=None)


class Number(str):
    """A JSON number kept as its text, where a float would change it: DECIMAL(65,30) digits,
    or the trailing zeros of 12.50. dumps() writes it back verbatim."""


def _parse_float(text: str):
    f = float(text)
    return f if repr(f) == text else Number(text)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # json.loads takes NaN/Infinity; no UDF writes them


_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=_no_constant)  # one, not one per call


def loads(text):
    """json.loads that keeps every number exactly as written (see Number) and refuses NaN
    and Infinity."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    return _DECODER.decode(text)


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_COMPOSITE = (Number, dict, list)


def dumps(value) -> str:
    """Compact JSON; Numbers are written as their text (the C encoder would quote them)."""
    if isinstance(value, Number):
        return str.__str__(value)
    if isinstance(value, dict):
        for v in value.values():
            if isinstance(v, _COMPOSITE):
                return "{" + ",".join(_ENCODE(str(k)) + ":" + dumps(v) for k, v in value.items()) + "}"
        return _ENCODE(value)  # flat and no exact numbers: the C encoder
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return _ENCODE(value)


MAX_VERSION = 2**63 - 1  # gman_stamp() is a BIGINT


def _check_text(text: str, what: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")  # a lone surrogate ("\ud800") decodes, but no Redis key can hold it
    except UnicodeEncodeError:
        raise PayloadError(f"{what} is not valid Unicode: {text!r:.80}") from None


def _check_key_value(name: str, value: Any) -> None:
    if type(value) is int:  # the common key
        return
    if isinstance(value, str):
        _check_text(value, f"key {name!r}")
    elif isinstance(value, dict) and set(value) == {"$base64"}:
        decode_value(value)
    elif isinstance(value, bool) or not isinstance(value, (int, float, type(None))):
        raise PayloadError(f"key {name!r:.80} must be a string, a number or {{\"$base64\": ...}}, "
                           f"not {type(value).__name__}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise PayloadError(f"key {name!r:.80} is not a finite number")


def _check_key(key: Any) -> None:
    if not isinstance(key, dict) or not key:
        raise PayloadError("missing key")
    for name, value in key.items():
        _check_text(name, "a key column name")
        _check_key_value(name, value)


def parse(workload: bytes) -> Change:
    """The change a job's workload describes; PayloadError for anything else (never another
    exception, whatever the bytes)."""
    try:
        doc = loads(workload)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise PayloadError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise PayloadError("not a JSON object")
    if "op" not in doc:  # the seeds' shape: the row itself, keyed by id
        if "id" not in doc:
            raise PayloadError("a bare row needs an 'id' member")
        _check_key_value("id", doc["id"])
        return Change("upsert", None, {"id": doc["id"]}, None, doc)
    op, key, table = doc.get("op"), doc.get("key"), doc.get("table")
    if op not in ("upsert", "delete"):
        raise PayloadError(f"unknown op {op!r:.80}")
    if table is not None:
        if not isinstance(table, str) or not table:
            raise PayloadError(f"table must be a non-empty string, not {table!r:.80}")
        _check_text(table, "table")
    _check_key(key)
    version = doc.get("v")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int):
            raise PayloadError("version must be an integer")
        if not 0 <= version <= MAX_VERSION:
            raise PayloadError(f"version {version} is outside 0..2^63-1")
    row = doc.get("row")
    if op == "upsert" and not isinstance(row, dict):
        raise PayloadError("an upsert needs a row")
    return Change(op, table, key, version, row if op == "upsert" else None)


def decode_value(value: Any) -> Any:
    """A column value as the database holds it: {"$base64": s} -> bytes, others unchanged.
    Bad base64 is a PayloadError."""
    if isinstance(value, dict) and set(value) == {"$base64"}:
        text = value["$base64"]
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise PayloadError(f"bad base64 {text!r:.80}") from None
    return value

