"""A job assigned to pygen/gearman/worker.py's Worker, answered through it on the link
(pygen/gearman/link.py) it came in on."""
from __future__ import annotations

from pygen.gearman.protocol import from_bytes


class Job:
    """A job assigned to this worker. handle/function/unique are str (unique decoded with
    surrogateescape, so any bytes survive), workload is bytes, server is "host:port"."""

    __slots__ = ("handle", "function", "unique", "workload", "server", "done", "_worker", "_link", "_gen")

    def __init__(self, worker, link, handle, function, unique, workload):
        self.handle, self.function, self.unique = from_bytes(handle), from_bytes(function), from_bytes(unique)
        self.workload, self.server, self.done = workload, link.conn.address, False
        self._worker, self._link, self._gen = worker, link, link.gen

    @property
    def alive(self) -> bool:
        """Whether the job can still be answered: the connection it came in on is still up. Once
        it dropped, gearmand has re-queued the job for another worker."""
        return self._link.gen == self._gen and self._link.state in ("awake", "sleeping")

    def complete(self, data: bytes | str = b"") -> bool:
        return self._worker.complete(self, data)

    def fail(self) -> bool:
        return self._worker.fail(self)

    def exception(self, text: str) -> bool:
        return self._worker.exception(self, text)

    def __repr__(self) -> str:
        return (f"<Job {self.handle} {self.function} unique={self.unique!r} "
                f"{len(self.workload)} B from {self.server}>")
