"""The Gearman worker's connection to one server (pygen/gearman/worker.py drives it): its
state and the accounting of what the server may still answer, which pairs every reply, an ERROR
included, with the request it answers."""
from __future__ import annotations

import collections

from pygen.gearman.connection import Connection
from pygen.gearman.protocol import REQ, Type, encode


class Link:
    """The worker's connection to one server. state: down -> connecting -> awake (grab) <->
    sleeping (PRE_SLEEP sent, waiting for NOOP) -> down on any error."""

    def __init__(self, conn: Connection):
        self.conn, self.state, self.gen = conn, "down", 0
        self.fd = -1
        self.retry_at = self.backoff = 0.0
        self.deadline = 0.0      # connecting: give up then; grabs outstanding: no reply by then = dead
        self.grabs = 0           # grabs sent, reply not yet read
        self.empty = False       # a NO_JOB came in this round
        self.slept_at = 0.0
        # False once the server refused GRAB_JOB_UNIQ (Perl Gearman::Server): GRAB_JOB from then
        # on, for every later connection to it too. Such a server keeps a job after WORK_EXCEPTION.
        self.uniq = True
        # What the server may still answer, in send order: [kind, count] with kind "U"
        # (GRAB_JOB_UNIQ), "G" (GRAB_JOB) or "E" (ECHO_REQ), each answered exactly once, or one
        # answered only when refused, by an ERROR: "H" (SET_CLIENT_ID, CAN_DO), "R"
        # (WORK_COMPLETE/FAIL/EXCEPTION), "S" (PRE_SLEEP). It tells which request an ERROR
        # answers, as replies come in request order on a connection; an ECHO_REQ is sent after
        # such silent requests, before the next grabs, so that an ERROR before its ECHO_RES is
        # known to answer them and one after it a grab.
        self.order: collections.deque[list] = collections.deque()
        self.quiet: dict[str, list] = {}  # warning kind -> [last logged at, suppressed since]

    def expect(self, kind: str, n: int) -> None:
        if self.order and self.order[-1][0] == kind:
            self.order[-1][1] += n
        else:
            self.order.append([kind, n])

    def answer(self, reply: str) -> str | None:
        """Account for one reply, "grab" (JOB_ASSIGN*, NO_JOB), "echo" or "error"; returns the
        kind of request it answers, None if none waits for such a reply. A grab's or an echo's
        reply also settles the silent requests sent before it (not refused)."""
        order = self.order
        if reply == "error" and order and order[0][0] in SILENT:
            kind = order[0][0]
        else:
            while order and order[0][0] in SILENT:
                order.popleft()
            if not order:
                return None
            kind = order[0][0]
            if (reply == "grab" and kind == "E") or (reply == "echo" and kind != "E"):
                return None
            if kind != "E":
                self.grabs -= 1
        order[0][1] -= 1
        if not order[0][1]:
            order.popleft()
        return kind


SILENT = ("H", "R", "S")  # requests answered only when refused
GRAB = {True: encode(REQ, Type.GRAB_JOB_UNIQ), False: encode(REQ, Type.GRAB_JOB)}
FENCE = encode(REQ, Type.ECHO_REQ, b"")
