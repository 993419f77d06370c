"""gearmand's text admin protocol (status, workers, version, getpid, maxqueue...): one command,
one reply, on a connection of its own."""
import socket

MULTILINE = ("status", "workers")  # replies of several lines, ended by a '.' line


def admin(host: str, port: int, command: str, timeout: float) -> str:
    """Send one text admin command; the reply without its terminating '.' line."""
    multiline = command.split()[0] in MULTILINE
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(command.encode() + b"\n")
        buf, end = b"", b"\n.\n" if multiline else b"\n"
        while not buf or not (b"\n" + buf).endswith(end):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"gearmand closed the admin connection after {buf[-80:]!r}")
            buf += chunk
    text = buf.decode("utf-8", "replace")
    return text[:-2] if multiline else text.rstrip("\n")
