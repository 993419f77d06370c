"""The worker's writes on a Redis Cluster: a batch grouped by hash slot (a script's keys must
share one), one redis_scripts.APPLY call per slot carrying all of that slot's writes, the calls
of each master sent as one pipeline, every master's pipeline in flight at once.

The fast path reads the slot -> master map that redis-py's RedisCluster keeps. A call that a
master answers with an error (MOVED, ASK, TRYAGAIN, NOSCRIPT, CLUSTERDOWN) is sent again
through RedisCluster.execute_command, which follows the redirection and updates its map; a
call the client still cannot place goes one write at a time (a slot half migrated answers
TRYAGAIN to a call whose keys are on both sides). A connection that fails (a master gone in a
failover) raises: the caller retries the batch, and the next batch first reloads the map.
Every write is guarded (or idempotent): a batch sent twice, or half, changes nothing.
each() sends one call per write the same way, for the repairs of verify, load and reconcile
(pygen/sync/repair.py), which report each write skipped as stale.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

from pygen.sync import plan
from pygen.sync.redis_scripts import APPLY, APPLY_SHA


def slot_of(key: str) -> int:
    from redis.crc import key_slot
    return key_slot(key.encode())


def _same_slot(w: plan.Write, slot: int) -> bool:
    key = w.key
    if "{" not in key and "}" not in key and w.version_key == "{" + key + "}#v":
        return True  # its tag is the whole key: the key's own slot (the common case, no hashing)
    return slot_of(w.version_key) == slot


def _slot(w: plan.Write) -> int:
    """The write's slot; a write whose version key is in another slot than its key (not one
    named by plan.version_key()) raises plan.PlanError: no single script could guard it."""
    slot = slot_of(w.key)
    if w.version is not None and not _same_slot(w, slot):
        raise plan.PlanError(f"key {w.key!r:.80} and its version key {w.version_key!r:.80} are in "
                             "different cluster slots")
    return slot


def slot_groups(writes: Sequence[plan.Write]) -> Dict[int, List[plan.Write]]:
    """{slot: its writes, in batch order} (_slot() raises for a write no script can guard)."""
    groups: Dict[int, List[plan.Write]] = {}
    for w in writes:
        groups.setdefault(_slot(w), []).append(w)
    return groups


def _command(writes: Sequence[plan.Write]) -> tuple:
    keys, args = plan.script_args(writes)
    return ("EVALSHA", APPLY_SHA, len(keys), *keys, *args)


_EVALSHA = b"$7\r\nEVALSHA\r\n$40\r\n" + APPLY_SHA.encode() + b"\r\n"


def pack(calls: Sequence[Sequence[plan.Write]]) -> bytes:
    """The RESP of one APPLY call per list of writes, back to back: what redis-py's
    Connection.pack_commands() makes of _command(), built in one pass (that packer, one
    isinstance() and encode() per argument, was half of the cluster path's time)."""
    out: List[bytes] = []
    for writes in calls:
        keys, args = plan.script_args(writes)
        n = str(len(keys)).encode()
        out.append(b"*%d\r\n%s$%d\r\n%s\r\n" % (3 + len(keys) + len(args), _EVALSHA, len(n), n))
        for k in keys:
            k = k.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(k), k))
        for a in args:
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class ClusterWriter:
    """begin()/finish()/write() of redis_writer.RedisWriter for a redis.cluster.RedisCluster."""

    def __init__(self, client):
        self.client = client
        self.reload = False  # a connection failed: the slot map may be stale (failover)

    def write(self, writes: List[plan.Write]) -> int:
        return self.finish(self.begin(writes))

    def each(self, writes: Sequence[plan.Write]) -> List[bool]:
        """One call per write, pipelined per master as write() does: for each write, whether
        it was skipped as stale (what verify's and reconcile's repairs report)."""
        calls = [[w] for w in writes]
        skipped = {id(ws): n for ws, n in self._replies(self._send([(_slot(ws[0]), ws) for ws in calls]))}
        return [bool(skipped[id(ws)]) for ws in calls]

    def begin(self, writes: List[plan.Write]):
        """Send every master its pipeline; returns what finish() reads."""
        return self._send(slot_groups(writes).items())

    def _send(self, calls):
        """Send each (slot, writes) call to its slot's master, a pipeline per master."""
        if not calls:
            return []
        import redis
        if self.reload:
            self.client.nodes_manager.initialize()
            self.reload = False
        by_node: Dict[str, tuple] = {}
        manager = self.client.nodes_manager
        cache = manager.slots_cache  # slot -> [primary, replicas...]; read, as get_node_from_slot does
        for slot, ws in calls:
            nodes = cache.get(slot)
            node = nodes[0] if nodes else manager.get_node_from_slot(slot)  # raises SlotNotCoveredError
            entry = by_node.get(node.name)
            if entry is None:
                entry = by_node[node.name] = (node, [])
            entry[1].append(ws)
        sent = []
        try:
            for node, calls in by_node.values():
                pool = self.client.get_redis_connection(node).connection_pool
                conn = pool.get_connection()
                sent.append((pool, conn, calls))
                conn.send_packed_command([pack(calls)])
        except BaseException as e:
            for pool, conn, _ in sent:
                conn.disconnect()
                pool.release(conn)
            if isinstance(e, (redis.ConnectionError, redis.TimeoutError, OSError)):
                self.reload = True
            raise
        return sent

    def finish(self, sent) -> int:
        """Read every master's replies; calls answered with an error go again through the
        cluster client. Returns the number of writes skipped as stale."""
        return sum(n for _, n in self._replies(sent))

    def _replies(self, sent) -> List[tuple]:
        """(writes, how many of them were skipped) for every call sent."""
        import redis
        done, again, failed = [], [], None
        for pool, conn, calls in sent:
            try:
                for ws in calls:
                    try:
                        done.append((ws, conn.read_response()))
                    except redis.ResponseError as e:  # this call only; the pipeline's others stand
                        again.append((ws, e))
            except BaseException as e:  # the connection is lost: its unread replies with it
                conn.disconnect()
                failed = failed or e
            finally:
                pool.release(conn)
        if failed is not None:
            if isinstance(failed, (redis.ConnectionError, redis.TimeoutError, OSError)):
                self.reload = True
            raise failed
        if any(isinstance(e, redis.exceptions.NoScriptError) for _, e in again):
            self.client.script_load(APPLY)  # on every primary: a new, restarted or flushed one lacked it
        done += [(ws, self._again(ws)) for ws, _ in again]
        return done

    def _again(self, writes: List[plan.Write]) -> int:
        import redis
        try:
            return self._execute(writes)
        except redis.exceptions.TryAgainError:
            if len(writes) == 1:
                raise
        return sum(self._execute([w]) for w in writes)  # each key on its side of a migration

    def _execute(self, writes: List[plan.Write]) -> int:
        import redis
        try:
            return self.client.execute_command(*_command(writes))
        except redis.exceptions.NoScriptError:
            self.client.script_load(APPLY)
            return self.client.execute_command(*_command(writes))
