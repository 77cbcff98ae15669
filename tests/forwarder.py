"""A TCP forwarder on loopback that a test controls: the network between a client and a real
server, which the test can take away cleanly (``stop``) or partition (``partition``).

Point the client at ``through(url, forwarder.port)`` instead of the server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlparse, urlunparse

_TAIL = 256  # bytes of the previous read kept for partition_on: its longest pattern


class _Link:
    """One forwarded connection: its server side once connected, and whether the path it
    took is gone (``heal(half_open=True)``)."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.gone = False


class Forwarder:
    """A TCP forwarder ``127.0.0.1:<port>`` -> ``target``, one thread pair per connection.

    - ``stop()`` closes the listener and every forwarded connection (a client then gets
      "connection refused" or a reset); ``start()`` listens again on the same port.
    - ``partition()`` stops forwarding both ways but keeps every socket open, as a network
      partition does: what either side sends (a close too) is held, nothing is refused, and a
      new connection is accepted but reaches nothing. ``partition(refuse=True)`` also stops
      listening: a new connection is refused by the operating system (ECONNREFUSED) at once.
      ``heal()`` delivers what was held, in order, listens again on the same port if it had
      stopped, and forwards again; ``heal(drop=True)`` closes the held connections instead;
      ``heal(half_open=True)`` leaves them half-open: the server's side is closed (the server
      forgets them) and the client's is kept open and silent, with no FIN or RST, until
      ``stop()`` (what the client sends on it is read and dropped), as when a NAT or
      connection-tracking entry expired during the partition; new connections go through.
    - ``partition_on(pattern)`` partitions the moment ``pattern`` comes from the server (or,
      with ``from_client``, from the client): the bytes that carry it are held with the rest
      (the other side never sees them); ``triggered`` is set then.
    - ``accepted`` counts the connections accepted, ``upstream`` those that reached the server.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._trigger: tuple[bytes, bool, bool] | None = None  # (pattern, from_client, refuse)
        self.triggered = threading.Event()
        self.accepted = 0
        self.upstream = 0

    def start(self) -> None:
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", self.port))
        lsock.listen(64)
        self.port = int(lsock.getsockname()[1])
        self._listener = lsock
        self._flowing.set()
        threading.Thread(target=self._accept, args=(lsock,), daemon=True).start()

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None

    def _close_conns(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def stop(self) -> None:
        self._close_listener()
        self._close_conns()
        self._flowing.set()  # threads held by a partition see their closed sockets and end

    def partition(self, *, refuse: bool = False) -> None:
        """Hold every byte (and every close) from now on, both ways, until :meth:`heal`;
        with ``refuse``, stop listening too (new connections are refused until then)."""
        self._flowing.clear()
        if refuse:
            self._close_listener()

    def partition_on(
        self, pattern: bytes, *, from_client: bool = False, refuse: bool = False
    ) -> None:
        """Arm a :meth:`partition` (``refuse`` as there) for the first bytes from the server
        (from the client with ``from_client``) that contain ``pattern`` (also when it spans
        two reads), which it holds. ValueError for an empty pattern or one over 256 bytes."""
        if not 0 < len(pattern) <= _TAIL:
            raise ValueError(f"partition_on needs a pattern of 1 to {_TAIL} bytes")
        with self._lock:
            self._trigger = (pattern, from_client, refuse)

    def heal(self, *, drop: bool = False, half_open: bool = False) -> None:
        """Deliver what the partition held, listen again if it stopped, and forward again.
        With ``drop``, deliver nothing: every connection open until now is closed instead
        (what either side sent into the partition is lost, as when the network gave up).
        With ``half_open``, deliver nothing either: every connection open until now loses its
        server side and stays open, silent, on the client's (see the class doc)."""
        if drop:
            self._close_conns()
        if half_open:
            with self._lock:
                links, self._links = self._links, []
                for link in links:
                    link.gone = True
            for link in links:
                if link.upstream is not None:
                    with contextlib.suppress(OSError):
                        link.upstream.shutdown(socket.SHUT_RDWR)
        if self._listener is None and self.port:
            self.start()  # the same port: start() binds self.port, with SO_REUSEADDR
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
        link = _Link(client)
        with self._lock:
            self._conns.add(client)
            self._links.append(link)
            self.accepted += 1
        self._flowing.wait()  # partitioned: the server is not reached (the client times out)
        if link.gone:
            self._drain(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._conns.add(upstream)
            link.upstream = upstream
            self.upstream += 1
        for a, b, from_client in ((client, upstream, True), (upstream, client, False)):
            threading.Thread(target=self._pipe, args=(a, b, from_client, link), daemon=True).start()

    def _check_trigger(self, seen: bytes, from_client: bool) -> None:
        """Partition now when the armed pattern is in ``seen`` (bytes from that side)."""
        with self._lock:
            trigger = self._trigger
            if trigger is None or trigger[1] != from_client or trigger[0] not in seen:
                return
            refuse = trigger[2]
            self._trigger = None
        self.partition(refuse=refuse)
        self.triggered.set()

    @staticmethod
    def _drain(client: socket.socket) -> None:
        """Read and drop what the client of a half-open connection sends, until it closes."""
        with contextlib.suppress(OSError):
            while client.recv(65536):
                pass

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool, link: _Link) -> None:
        tail = b""  # the end of the previous read: a pattern may span two
        try:
            while True:
                data = src.recv(65536)
                if self._trigger is not None and data:
                    seen = tail + data
                    self._check_trigger(seen, from_client)
                    tail = seen[-_TAIL:]
                self._flowing.wait()  # a partition holds what was read, and an end of stream
                if link.gone:  # half-open: the client hears nothing more, not even a close
                    if from_client and data:
                        self._drain(src)
                    return
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst) if not link.gone else (link.upstream,):
                with contextlib.suppress(OSError):
                    if s is not None:
                        s.shutdown(socket.SHUT_RDWR)


def through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by ``127.0.0.1:port`` (user, path and query
    kept): the same server, reached through a forwarder listening on ``port``."""
    parts = urlparse(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunparse(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))
