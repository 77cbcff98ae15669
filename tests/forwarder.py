"""A TCP forwarder on loopback that a test controls: the network between a client and a real
server, which the test can take away cleanly (``stop``) or partition (``partition``).

Point the client at ``through(url, forwarder.port)`` instead of the server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlparse, urlunparse


class Forwarder:
    """A TCP forwarder ``127.0.0.1:<port>`` -> ``target``, one thread pair per connection.

    - ``stop()`` closes the listener and every forwarded connection (a client then gets
      "connection refused" or a reset); ``start()`` listens again on the same port.
    - ``partition()`` stops forwarding both ways but keeps every socket open, as a network
      partition does: what either side sends (a close too) is held, nothing is refused, and a
      new connection is accepted but reaches nothing. ``heal()`` delivers what was held, in
      order, and forwards again.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def start(self) -> None:
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", self.port))
        lsock.listen(64)
        self.port = int(lsock.getsockname()[1])
        self._listener = lsock
        self._flowing.set()
        threading.Thread(target=self._accept, args=(lsock,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        self._flowing.set()  # threads held by a partition see their closed sockets and end

    def partition(self) -> None:
        """Hold every byte (and every close) from now on, both ways, until :meth:`heal`."""
        self._flowing.clear()

    def heal(self) -> None:
        """Deliver what the partition held and forward again."""
        self._flowing.set()

    @property
    def partitioned(self) -> bool:
        return not self._flowing.is_set()

    def _accept(self, lsock: socket.socket) -> None:
        while True:
            try:
                client, _ = lsock.accept()
            except OSError:
                return  # stopped
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        with self._lock:
            self._conns.add(client)
        self._flowing.wait()  # partitioned: the server is not reached (the client times out)
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._conns.add(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                self._flowing.wait()  # a partition holds what was read, and an end of stream
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by ``127.0.0.1:port`` (user, path and query
    kept): the same server, reached through a forwarder listening on ``port``."""
    parts = urlparse(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunparse(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))
