"""The Redis side of every guarded write: runs pygen/sync/plan.py's Write lists through
redis_scripts.APPLY, one Lua call per batch (standalone Redis) or one call per hash slot,
pipelined per master (Redis Cluster: pygen/sync/cluster_writer.py): RedisWriter for the worker,
GuardedWrites (one call a write, each one's outcome) for verify's and reconcile's repairs; and
the one reading of a --redis URL (redis_target, redis_client), for the worker, verify,
reconcile and doctor.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from pygen.sync import plan
from pygen.sync.cluster_writer import ClusterWriter
from pygen.sync.redis_scripts import APPLY, APPLY_SHA


def redis_target(url: str, cluster: bool = False) -> tuple[bool, str]:
    """(cluster?, the URL for redis-py): a '+cluster' scheme selects the cluster client."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"--redis {url!r}: expected redis://host:port/db")
    if scheme in ("redis+cluster", "rediss+cluster"):
        return True, scheme.split("+")[0] + "://" + rest
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"--redis {url!r}: unknown scheme {scheme!r} "
                         "(redis, rediss, unix, redis+cluster, rediss+cluster)")
    if cluster and scheme == "unix":
        raise ValueError("--redis-cluster needs a redis:// or rediss:// URL")
    return cluster, url


def redis_client(url: str, cluster: bool = False, timeout: float = 10.0,
                 connect_timeout: Optional[float] = None):
    """The redis-py client for --redis (a '+cluster' scheme or cluster=True: Redis Cluster);
    connect_timeout defaults to timeout."""
    import redis
    cluster, url = redis_target(url, cluster)
    kw = {"socket_timeout": timeout,
          "socket_connect_timeout": timeout if connect_timeout is None else connect_timeout}
    if cluster:
        from redis.cluster import RedisCluster
        return RedisCluster.from_url(url, **kw)
    return redis.Redis.from_url(url, **kw)


class GuardedWrites:
    """The guarded writes one at a time, for verify's and reconcile's repairs over their own
    client: each(writes) says of each write whether it was skipped as stale."""

    def __init__(self, client):
        self.client = client
        self.script = client.register_script(APPLY)
        # a ClusterPipeline refuses evalsha() (so Script objects): the cluster writer sends each
        # master its calls and loads the script where one lacks it
        self._cluster = ClusterWriter(client) if type(client).__name__ == "RedisCluster" else None

    @property
    def on_cluster(self) -> bool:
        return self._cluster is not None

    def each(self, writes: Sequence[plan.Write]) -> List[bool]:
        if self._cluster is not None:
            return self._cluster.each(writes)
        pipe = self.client.pipeline(transaction=False)
        for w in writes:
            keys, args = plan.script_args([w])
            self.script(keys=keys, args=args, client=pipe)
        return [bool(int(n)) for n in pipe.execute()]


class RedisWriter:
    """Runs plan.Write lists through redis_scripts.APPLY; raises redis.RedisError/OSError."""

    def __init__(self, url: str, cluster: bool = False, timeout: float = 5.0):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        self.cluster, url = redis_target(url, cluster)
        kw = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if self.cluster:
            from redis.cluster import RedisCluster
            self.client = RedisCluster.from_url(url, **kw)
            self._cluster = ClusterWriter(self.client)
        else:  # one quick retry covers a pooled connection that died; longer outages are ours
            self.client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 1), **kw)

    def write(self, writes: List[plan.Write]) -> int:
        """Apply the writes; returns how many were skipped as stale."""
        return self.finish(self.begin(writes))

    def begin(self, writes: List[plan.Write]):
        """Send the writes without waiting for the reply (the caller works meanwhile)."""
        if self.cluster:
            return None, self._cluster.begin(writes)
        if not writes:
            return None, None
        keys, args = plan.script_args(writes)
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("EVALSHA", APPLY_SHA, len(keys), *keys, *args)
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        return conn, (keys, args)

    def finish(self, token) -> int:
        """Wait for begin()'s reply: the number of writes skipped as stale."""
        conn, what = token
        if conn is None:
            return self._cluster.finish(what) if self.cluster else 0
        import redis
        pool = self.client.connection_pool
        try:
            return conn.read_response()
        except redis.exceptions.NoScriptError:  # a restarted or flushed Redis
            pass
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        keys, args = what
        self.client.script_load(APPLY)
        return self.client.evalsha(APPLY_SHA, len(keys), *keys, *args)

    def held(self, writes: List[plan.Write]) -> list:
        """What Redis holds for each write's key: (its version key's value, its value: GET,
        or HGETALL for a hash write); a failed read is the exception."""
        pipe = self.client.pipeline(transaction=False)
        for w in writes:
            pipe.get(w.version_key)
            pipe.hgetall(w.key) if w.op == "hash" else pipe.get(w.key)
        out = pipe.execute(raise_on_error=False)
        return list(zip(out[0::2], out[1::2]))

    def close(self) -> None:
        self.client.close()
