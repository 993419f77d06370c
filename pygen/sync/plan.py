"""What the worker writes for a change (pure: no sockets, no clock, no I/O).

    plan(change, options) -> [Write]        the Redis write of one payload (pygen/sync/payload.py)
    collapse(writes)                        one write per key where the result is the same
    script_args(writes) -> (keys, args)     the arguments of redis_scripts.APPLY

Committed mode's reads are pygen/sync/committed_sql.py, its decision pygen/sync/decision.py.
pygen/sync/worker.py does the I/O; the metrics text is pygen/sync/metrics.py.

Redis layout (json mode, default key template):
    shop.data:7          '{"id":7,"volume":12.5}'  (hash mode: a HASH of the same members)
    {shop.data:7}#v      '1732345678123456'        the version of that image, or a delete's
                                                   tombstone (expires after --tombstone-ttl)
The version key wraps the data key in a hash tag, so both live in one Redis Cluster slot.
"""
from __future__ import annotations

from binascii import crc_hqx
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Collection, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from pygen.sync.payload import Change, PayloadError, decode_value
from pygen.sync.payload import dumps as payload_dumps

__all__ = ["DEFAULT_TEMPLATE", "BARE_TEMPLATE", "PlanError", "Options", "Write", "compile_template", "render_key",
           "version_key", "hash_value", "plan", "admit", "collapse", "script_args", "lag_us"]

DEFAULT_TEMPLATE = "{table}:{key}"
BARE_TEMPLATE = "{id}"  # the seeds' worker: SET <id> <json>
_JSON = payload_dumps  # exact numbers (pygen.sync.payload.Number) survive the round trip


class PlanError(PayloadError):
    """A change this worker's options cannot write (unknown placeholder, bare row in
    committed mode, ...): the job is failed, not retried."""


@dataclass(frozen=True)
class Options:
    mode: str = "json"                       # "json": SET key <row JSON>; "hash": HSET key field value...
    fields: Optional[Tuple[str, ...]] = None  # only these row members (in this order); None: all
    key_template: Optional[str] = None        # None: DEFAULT_TEMPLATE, BARE_TEMPLATE for bare rows
    ttl: Optional[float] = None               # seconds; None: keys do not expire
    tombstone_ttl: float = 86400.0            # seconds a delete's version outlives the row

    def __post_init__(self):
        if self.mode not in ("json", "hash"):
            raise ValueError(f"mode must be 'json' or 'hash', not {self.mode!r}")
        if self.ttl is not None and self.ttl <= 0:
            raise ValueError("ttl must be positive")
        if self.tombstone_ttl <= 0:
            raise ValueError("tombstone ttl must be positive")
        if self.key_template is not None:
            compile_template(self.key_template)  # a syntax error shows at start, not per job


class Write(NamedTuple):
    """One Redis write. op: "set" (values = (json,)), "hash" (values = (f1, v1, ...); none:
    the key ends absent) or "del" (values = ()). version None: unguarded. ttl_ms: the data's
    TTL for set/hash, the tombstone's for del; 0 = none."""
    op: str
    key: str
    version_key: str
    version: Optional[int]
    ttl_ms: int
    values: Tuple[bytes, ...] = ()


# ---- key templates ---------------------------------------------------------------------------

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@lru_cache(maxsize=64)
def compile_template(template: str) -> Tuple[Tuple[bool, str], ...]:
    """[(is_placeholder, text)]. '{name}' is a placeholder, '{{' and '}}' are literal braces
    (for Redis hash tags: 'user:{{{id}}}' -> 'user:{7}')."""
    parts: List[Tuple[bool, str]] = []
    pos = 0
    for m in _TOKEN.finditer(template):
        if m.start() > pos:
            parts.append((False, template[pos:m.start()]))
        tok = m.group(0)
        if tok in ("{{", "}}"):
            parts.append((False, tok[0]))
        elif m.group(1):
            parts.append((True, m.group(1)))
        else:
            raise ValueError(f"key template {template!r}: unbalanced or empty brace at {m.start()}"
                             " (write {{ or }} for a literal brace)")
        pos = m.end()
    if pos < len(template):
        parts.append((False, template[pos:]))
    return tuple(parts)


def _key_part(value: Any) -> str:
    # a key value in a rendered key: bytes as hex, the rest as str()
    value = decode_value(value)
    return value.hex() if isinstance(value, bytes) else str(value)


def render_key(change: Change, template: Optional[str] = None) -> str:
    """The Redis key of a change. Placeholders: {table}, {key} (all key values joined by ':'),
    and the key's column names ({id}, {shop_id}...)."""
    if template is None:
        if change.table is not None:  # the hot path: DEFAULT_TEMPLATE
            key = change.key
            if len(key) == 1:
                for v in key.values():
                    return f"{change.table}:{v}" if type(v) in (int, str) else f"{change.table}:{_key_part(v)}"
            return change.table + ":" + ":".join(_key_part(v) for v in key.values())
        template = BARE_TEMPLATE
    out = []
    for placeholder, text in compile_template(template):
        if not placeholder:
            out.append(text)
        elif text == "table":
            if change.table is None:
                raise PlanError(f"key template {template!r} needs {{table}}, the payload has none")
            out.append(change.table)
        elif text == "key":
            out.append(":".join(_key_part(v) for v in change.key.values()))
        elif text in change.key:
            out.append(_key_part(change.key[text]))
        else:
            raise PlanError(f"key template {template!r}: {{{text}}} is not a key column of "
                            f"{change.table or 'the row'} (key: {', '.join(change.key)})")
    return "".join(out)


def version_key(key: str) -> str:
    """The companion key holding the version of `key`, in the same Redis Cluster slot: a key
    with a hash tag keeps it ('{u7}:x' -> '{u7}:x#v'), any other key becomes the tag
    ('shop.data:7' -> '{shop.data:7}#v'). A key with a '}' and no tag cannot be a tag (it
    would end at that '}'): it gets a tag of its own slot in front ('a}b' -> '{#v19410}a}b#v')."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key + "#v"
    if "}" in key:
        return "{" + _slot_tags()[crc_hqx(key.encode(), 0) % 16384] + "}" + key + "#v"
    return "{" + key + "}#v"


@lru_cache(maxsize=1)
def _slot_tags() -> Tuple[str, ...]:
    """For each of the 16384 cluster slots, the first '#v<n>' (n = 0, 1, ...) that hashes to it
    (CRC16/XMODEM, as Redis Cluster hashes keys): a fixed table, built once (~0.1 s)."""
    tags: List[Optional[str]] = [None] * 16384
    left, n = 16384, 0
    while left:
        tag = f"#v{n}"
        slot = crc_hqx(tag.encode(), 0) % 16384
        if tags[slot] is None:
            tags[slot] = tag
            left -= 1
        n += 1
    return tuple(tags)


# ---- values ----------------------------------------------------------------------------------

def _row(change: Change, fields: Optional[Sequence[str]]) -> Dict[str, Any]:
    row = change.row or {}
    if fields is None:
        return row
    return {f: row[f] for f in fields if f in row}


def hash_value(value: Any) -> Optional[bytes]:
    """A column value as a hash field: text as UTF-8, {"$base64"} as its bytes, numbers and
    nested JSON as JSON text; None (SQL NULL) -> no field."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and set(value) == {"$base64"}:
        return decode_value(value)
    return _JSON(value).encode()


def plan(change: Change, options: Options = Options()) -> List[Write]:
    """The writes that make Redis hold `change` (an upsert's row image, or no key after a
    delete), guarded by change.version when it has one."""
    key = render_key(change, options.key_template)
    if key.endswith("#v"):  # it could be another key's version key (version_key()), which verify skips
        raise PlanError(f"key {key!r:.80} ends in '#v', the mark of version keys")
    vkey = version_key(key)
    if change.op == "delete":
        return [Write("del", key, vkey, change.version, round(options.tombstone_ttl * 1000))]
    ttl_ms = round(options.ttl * 1000) if options.ttl else 0
    row = _row(change, options.fields)
    if options.mode == "json":
        try:
            text = _JSON(row).encode()
        except (ValueError, UnicodeEncodeError, RecursionError) as e:  # lone surrogates, nesting: not from a trigger
            raise PlanError(f"row cannot be written as JSON: {e}") from None
        return [Write("set", key, vkey, change.version, ttl_ms, (text,))]
    values: List[bytes] = []
    for name, value in row.items():
        try:
            data = hash_value(value)
            if data is not None:
                values += (name.encode(), data)
        except (ValueError, UnicodeEncodeError, RecursionError) as e:  # PayloadError (bad base64) is a ValueError
            raise PlanError(f"field {name!r:.80} cannot be written: {e}") from None
    return [Write("hash", key, vkey, change.version, ttl_ms, tuple(values))]


def admit(change: Change, tables: Optional[Mapping[str, Optional[Collection[str]]]],
          latest: Optional[int] = None, whole: bool = False) -> None:
    """PlanError unless this worker may write the change: its table is one of `tables`
    ({schema.table: the columns it may carry, None: any}; tables None: every table, bare rows
    too) with no other column, and its version is not above `latest` (microseconds; None: no
    limit). whole (committed mode): an upsert also names every synced column but the key's,
    as the triggers' jobs do; the worker reads the columns a job names, so one naming fewer
    would put a cut-down image of the row in Redis."""
    if tables is not None:
        if change.table not in tables:
            what = "a bare row (no table)" if change.table is None else f"table {change.table!r:.80}"
            raise PlanError(f"{what} is not synced by this worker (--tables, or the tables with generated triggers)")
        columns = tables[change.table]
        if columns is not None:
            for name in (*change.key, *(change.row or ())):
                if name not in columns:
                    raise PlanError(f"{change.table}: column {name!r:.80} is not synced")
            if whole and change.op == "upsert":
                missing = sorted(set(columns) - set(change.key) - set(change.row or ()))
                if missing:
                    raise PlanError(f"{change.table}: the row misses synced column {missing[0]!r:.80}")
    if latest is not None and change.version is not None and change.version > latest:
        raise PlanError(f"version {change.version} is ahead of this worker's clock by more than --max-future-skew")


def collapse(writes: Sequence[Write]) -> List[Write]:
    """Drop the writes of a batch whose effect a later one replaces: per key, when every write
    is guarded the one of the largest version (the last of equals) is the result of running
    them all; when none is, the last one. Mixed keys keep every write, in order."""
    by_key: Dict[str, List[int]] = {}
    for i, w in enumerate(writes):
        by_key.setdefault(w.key, []).append(i)
    keep = set()
    for idx in by_key.values():
        if len(idx) == 1:
            keep.add(idx[0])
            continue
        guarded = [writes[i].version is not None for i in idx]
        if all(guarded):
            best = idx[0]
            for i in idx[1:]:
                if writes[i].version >= writes[best].version:
                    best = i
            keep.add(best)
        elif not any(guarded):
            keep.add(idx[-1])
        else:
            keep.update(idx)
    return [w for i, w in enumerate(writes) if i in keep]


_OP = {"set": b"s", "hash": b"h", "del": b"d"}


def script_args(writes: Sequence[Write]) -> Tuple[List[str], List[bytes]]:
    """KEYS and ARGV of redis_scripts.APPLY for these writes, in order."""
    keys: List[str] = []
    args: List[bytes] = []
    for w in writes:
        if w.version is not None and w.version < 0:
            raise PlanError(f"negative version {w.version}")
        keys += (w.key, w.version_key)
        args += (_OP[w.op], b"" if w.version is None else str(w.version).encode(),
                 str(w.ttl_ms).encode(), str(len(w.values)).encode(), *w.values)
    return keys, args


def lag_us(version: Optional[int], now_us: int) -> Optional[int]:
    """now - version for versions that are gman_stamp() microseconds (2001..2286), else None."""
    if version is None or not 10**15 <= version < 10**16:
        return None
    return now_us - version
