"""The Gearman binary protocol (gearman/gearmand PROTOCOL): packet encode and decode, no I/O.

A packet is a 12-byte header -- magic b"\\0REQ" (to the server) or b"\\0RES" (from it), type
and data size as big-endian uint32 -- then the data: the arguments joined by one NUL byte.
Every argument but the last is NUL-free; the last (a workload, a result) may hold any bytes.
How many arguments a type has comes from ARG_COUNT, so a packet always splits the same way.

The connection layer (pygen/gearman/connection.py) encodes with encode() and feeds what it reads to a
Decoder, which hands out whole packets. The C plugin has its own codec (udf/gm_proto.c) with
the same table and the same refusals.
"""
from __future__ import annotations

import enum
import struct

REQ = b"\0REQ"
RES = b"\0RES"
HEADER = struct.Struct(">4sII")
HEADER_SIZE = HEADER.size  # 12
DEFAULT_MAX_DATA = 64 << 20  # a larger announced size is refused before anything is buffered
_U32_MAX = 2**32 - 1


class ProtocolError(ValueError):
    """The peer sent something that is not a Gearman packet we accept."""


class Type(enum.IntEnum):
    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


# Arguments per type, from PROTOCOL. Unlisted numbers (5, > 42) are unknown: refused both ways.
ARG_COUNT: dict[int, int] = {
    Type.CAN_DO: 1, Type.CANT_DO: 1, Type.RESET_ABILITIES: 0, Type.PRE_SLEEP: 0, Type.NOOP: 0,
    Type.SUBMIT_JOB: 3, Type.JOB_CREATED: 1, Type.GRAB_JOB: 0, Type.NO_JOB: 0,
    Type.JOB_ASSIGN: 3, Type.WORK_STATUS: 3, Type.WORK_COMPLETE: 2, Type.WORK_FAIL: 1,
    Type.GET_STATUS: 1, Type.ECHO_REQ: 1, Type.ECHO_RES: 1, Type.SUBMIT_JOB_BG: 3,
    Type.ERROR: 2, Type.STATUS_RES: 5, Type.SUBMIT_JOB_HIGH: 3, Type.SET_CLIENT_ID: 1,
    Type.CAN_DO_TIMEOUT: 2, Type.ALL_YOURS: 0, Type.WORK_EXCEPTION: 2, Type.OPTION_REQ: 1,
    Type.OPTION_RES: 1, Type.WORK_DATA: 2, Type.WORK_WARNING: 2, Type.GRAB_JOB_UNIQ: 0,
    Type.JOB_ASSIGN_UNIQ: 4, Type.SUBMIT_JOB_HIGH_BG: 3, Type.SUBMIT_JOB_LOW: 3,
    Type.SUBMIT_JOB_LOW_BG: 3, Type.SUBMIT_JOB_SCHED: 8, Type.SUBMIT_JOB_EPOCH: 4,
    Type.SUBMIT_REDUCE_JOB: 4, Type.SUBMIT_REDUCE_JOB_BACKGROUND: 4, Type.GRAB_JOB_ALL: 0,
    Type.JOB_ASSIGN_ALL: 5, Type.GET_STATUS_UNIQUE: 1, Type.STATUS_RES_UNIQUE: 6,
}

# SUBMIT_JOB* by (priority, background).
SUBMIT_TYPES = {
    ("normal", False): Type.SUBMIT_JOB, ("normal", True): Type.SUBMIT_JOB_BG,
    ("high", False): Type.SUBMIT_JOB_HIGH, ("high", True): Type.SUBMIT_JOB_HIGH_BG,
    ("low", False): Type.SUBMIT_JOB_LOW, ("low", True): Type.SUBMIT_JOB_LOW_BG,
}


def to_bytes(value: bytes | bytearray | memoryview | str) -> bytes:
    """Arguments may be given as str: UTF-8, with surrogateescape so that a unique id or handle
    decoded by from_bytes() goes back out as the exact bytes it came in as."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a packet argument must be bytes or str, not {type(value).__name__}")  # bytes(5) is 5 NULs


def from_bytes(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def encode(magic: bytes, ptype: int, *args) -> bytes:
    """One packet. Raises ValueError for an unknown magic or type, a wrong argument count, a NUL
    byte in an argument other than the last, or data over 4 GiB; TypeError for an argument
    that is neither bytes nor str."""
    if magic != REQ and magic != RES:
        raise ValueError(f"bad magic {magic!r}")
    nargs = ARG_COUNT.get(ptype)
    if nargs != len(args):
        if nargs is None:
            raise ValueError(f"unknown packet type {ptype}")
        raise ValueError(f"{Type(ptype).name} takes {nargs} arguments, not {len(args)}")
    parts = [a if type(a) is bytes else to_bytes(a) for a in args]
    for i in range(nargs - 1):
        if b"\0" in parts[i]:
            raise ValueError(f"{Type(ptype).name} argument {i} holds a NUL byte")
    data = b"\0".join(parts)
    if len(data) > _U32_MAX:
        raise ValueError("packet data over 4 GiB")
    return HEADER.pack(magic, ptype, len(data)) + data


def split_args(type: int, data: bytes) -> tuple[bytes, ...]:
    """The arguments of a packet's data: the first n-1 end at a NUL, the last is the rest."""
    nargs = ARG_COUNT[type]
    if nargs == 1:
        return (data,)
    if nargs == 0:
        if data:
            raise ProtocolError(f"{Type(type).name} carries no data, got {len(data)} bytes")
        return ()
    args = data.split(b"\0", nargs - 1)
    if len(args) != nargs:
        raise ProtocolError(f"{Type(type).name}: {len(args)} of {nargs} arguments")
    return tuple(args)


# A job assigned to a worker that is over max_data: refusing the stream would get the same job
# again on every reconnection, forever. Its body is skipped instead and the decoder hands out
# (OVERSIZE, (handle, type, size)), so that the worker can fail it (gearmand then drops it).
OVERSIZE = -1
_JOBS = (Type.JOB_ASSIGN, Type.JOB_ASSIGN_UNIQ, Type.JOB_ASSIGN_ALL)
_HANDLE_MAX = 1024  # a handle longer than this in an oversize job: out of sync


class Decoder:
    """Incremental decoder: feed() the bytes as they come, then iterate (or call next_packet())
    for whole packets as (type, args). Errors are raised as soon as the bytes that show them
    are in (a bad magic from its first byte), and the size is checked from the header before
    waiting for the data, so a peer cannot make us buffer more than max_data plus one read;
    a job over max_data is skipped as it comes (see OVERSIZE). After a ProtocolError the stream
    is out of sync: drop the connection."""

    def __init__(self, magic: bytes = RES, max_data: int = DEFAULT_MAX_DATA):
        if magic not in (REQ, RES):
            raise ValueError(f"bad magic {magic!r}")
        self.magic = magic
        self.max_data = max_data
        self._buf = bytearray()
        self._pos = 0  # consumed prefix of _buf, dropped lazily (no O(n^2) on many small packets)
        self._skip = 0  # bytes of an oversize job's body still to come, dropped as they arrive
        self._skipped = None  # that job's OVERSIZE packet, handed out once its body is over

    def feed(self, data: bytes) -> None:
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data
        self._check_header()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as a packet."""
        return len(self._buf) - self._pos

    def _check_header(self) -> tuple[int, int] | None:
        """(type, size) once the header is in, None before; raises on what is already wrong."""
        buf, pos = self._buf, self._pos
        have = len(buf) - pos
        if have >= HEADER_SIZE:
            magic, type, size = HEADER.unpack_from(buf, pos)
            if magic != self.magic:
                raise ProtocolError(f"bad magic {magic!r}, expected {self.magic!r}")
        else:  # a partial header: judge what is there
            n = min(have, 4)
            if buf[pos:pos + n] != self.magic[:n]:
                raise ProtocolError(f"bad magic {bytes(buf[pos:pos + 4])!r}, expected {self.magic!r}")
            if have < 8:
                return None
            type, size = int.from_bytes(buf[pos + 4:pos + 8], "big"), None
        nargs = ARG_COUNT.get(type)
        if nargs is None:
            raise ProtocolError(f"unknown packet type {type}")
        if size is None:
            return None
        if size > self.max_data and type not in _JOBS:
            raise ProtocolError(f"{Type(type).name} of {size} bytes is over the limit ({self.max_data})")
        if size and not nargs:
            raise ProtocolError(f"{Type(type).name} carries no data, got a size of {size}")
        return type, size

    def next_packet(self) -> tuple[int, tuple[bytes, ...]] | None:
        """The next whole packet, or None until more bytes are fed."""
        if self._skipped is not None:
            if self._skip:
                return None
            packet, self._skipped = self._skipped, None
            return packet
        header = self._check_header()
        if header is None:
            return None
        type, size = header
        start = self._pos + HEADER_SIZE
        end = start + size
        if size > self.max_data:
            return self._oversize(type, size, start, end)
        if len(self._buf) < end:
            return None
        data = bytes(self._buf[start:end])
        if end == len(self._buf):
            self._buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return type, split_args(type, data)

    def _oversize(self, type: int, size: int, start: int, end: int):
        nul = self._buf.find(b"\0", start, start + _HANDLE_MAX)
        if nul < 0:
            if len(self._buf) - start >= min(size, _HANDLE_MAX):
                raise ProtocolError(f"{Type(type).name} of {size} bytes: no job handle")
            return None
        packet = OVERSIZE, (bytes(self._buf[start:nul]), type, size)
        if len(self._buf) >= end:
            self._pos = end
            return packet
        # handed out once it is all in: gearmand 1.1 closed the connection on a WORK_FAIL that came
        # while it was still sending that job (seen here)
        self._skip, self._skipped = end - len(self._buf), packet
        self._buf.clear()
        self._pos = 0
        return None

    def __iter__(self):
        return self

    def __next__(self) -> tuple[int, tuple[bytes, ...]]:
        packet = self.next_packet()
        if packet is None:
            raise StopIteration
        return packet
