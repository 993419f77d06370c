"""Redis for the sandbox: one redis-server, or a Redis Cluster of several."""
from __future__ import annotations

import subprocess
import time

from pygen.sandbox.server import HOST, Managed, Server, ServerError, free_port

class Redis(Server):
    """redis-server without persistence (pass extra_args=["--appendonly", "yes"] for AOF)."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def client(self, **kw):
        import redis
        return redis.Redis(host=self.host, port=self.port, **{"socket_timeout": 10, **kw})

    def _command(self) -> list[str]:
        return ["/usr/bin/redis-server", "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--logfile", str(self.log_path), "--daemonize", "no", *self.extra_args]

    def _answers(self) -> bool:
        try:
            with self.client(socket_timeout=2) as c:
                return bool(c.ping())
        except Exception:  # redis.ConnectionError, BusyLoadingError while loading the AOF
            return False


class _ClusterNode(Redis):
    """One master of a RedisCluster: its cluster bus on a port of its own (--cluster-port),
    so that port + 10000 (the default) need not be free."""

    name = "redis-node"

    def __init__(self, extra_args=(), env=None):
        super().__init__(extra_args, env)
        self.bus_port = free_port()

    def _command(self) -> list[str]:
        return [*super()._command(), "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
                "--cluster-config-file", str(self.dir / "nodes.conf"), "--cluster-node-timeout", "2000"]


class RedisCluster(Managed):
    """`masters` cluster-enabled redis-servers joined by `redis-cli --cluster create` (no
    replicas), ready once every node says cluster_state:ok. url is a redis+cluster:// URL."""

    start_timeout = 30.0

    def __init__(self, masters: int = 3, extra_args=()):
        self.nodes = [_ClusterNode(extra_args) for _ in range(masters)]
        self.host = HOST

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def url(self) -> str:
        return f"redis+cluster://{self.host}:{self.port}"

    def client(self, **kw):
        from redis.cluster import RedisCluster as Client
        return Client(host=self.host, port=self.port, **{"socket_timeout": 10, **kw})

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        """redis-cli --cluster ARGS (create, reshard, check...); ServerError when it fails."""
        cmd = ["/usr/bin/redis-cli", "--cluster", *args]
        try:
            run = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise ServerError(f"{' '.join(cmd)}: no answer after {timeout:.0f} s\n{e.stdout or ''}") from None
        if run.returncode != 0:
            raise ServerError(f"{' '.join(cmd)} failed (code {run.returncode})\n{run.stdout}\n{run.stderr}")
        return run.stdout

    def start(self, timeout: float | None = None):
        try:
            for node in self.nodes:
                node.start()
            self.cli("create", *(f"{n.host}:{n.port}" for n in self.nodes), "--cluster-replicas", "0",
                     "--cluster-yes")
            self._wait_ok(timeout or self.start_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                try:
                    with node.client(socket_timeout=2) as c:
                        info = c.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
                        states.append(info.get("cluster_state") if isinstance(info, dict) else info)
                except Exception as e:  # noqa: BLE001 - a node still starting: look again
                    states.append(e)
            if all(s == "ok" for s in states):
                return
            if time.monotonic() > deadline:
                raise ServerError(f"redis cluster not ok after {timeout:.0f} s: {states!r:.500}\n"
                                  + "\n".join(n.log_tail(10) for n in self.nodes))
            time.sleep(0.05)

    def restart_node(self, index: int, timeout: float | None = None) -> None:
        """Restart one master on its port with its state (nodes.conf; its data only with AOF),
        and wait until the cluster is ok again."""
        self.nodes[index].restart(timeout)
        self._wait_ok(timeout or self.start_timeout)

    def node_of(self, key: str) -> "Redis":
        """The master serving `key` now."""
        with self.client() as c:
            node = c.get_node_from_key(key)
        return next(n for n in self.nodes if n.port == node.port)

    def flushall(self) -> None:
        for node in self.nodes:
            with node.client() as c:
                c.flushall()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __repr__(self) -> str:
        return f"<RedisCluster {', '.join(str(n.port) for n in self.nodes)}>"
