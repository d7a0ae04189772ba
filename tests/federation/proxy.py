"""A TCP proxy on 127.0.0.1 that breaks connections on purpose, for transfer tests.

It forwards bytes both ways between a client and the coordinator (TLS passes through
untouched: the client still verifies and pins the coordinator's own certificate). A test can

- ``cut_after(n, "up" | "down")``: close the connection that carries the n-th next byte in that
  direction (client → server is "up"), once — a cable pulled in the middle of a chunk;
- ``freeze()``: stop forwarding anything, on open and new connections alike — a coordinator
  that stops answering (``thaw()`` undoes it); ``freeze_after(n, direction)`` does it once the
  n-th next byte in that direction went through;

and read how many bytes went each way (``sent["up"]``, ``sent["down"]``).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.sent = {"up": 0, "down": 0}
        self.cuts = 0
        self._budget: dict[str, int] = {}
        self._then: dict[str, str] = {}
        self._frozen = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def cut_after(self, nbytes: int, direction: str) -> None:
        with self._lock:
            self._budget[direction] = nbytes
            self._then[direction] = "cut"

    def freeze_after(self, nbytes: int, direction: str) -> None:
        with self._lock:
            self._budget[direction] = nbytes
            self._then[direction] = "freeze"

    def freeze(self) -> None:
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()

    def close(self) -> None:
        self._stop.set()
        self._frozen.clear()
        with self._lock:
            for s in self._sockets:
                with suppress(OSError):
                    s.close()
        self.listener.close()
        for t in self._threads:
            t.join(timeout=5)

    # -- forwarding ----------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.settimeout(None)  # blocking sends; receives wait in select, to see a stop
            with self._lock:
                self._sockets += [client, server]
            pair = (client, server)
            for src, dst, direction in ((client, server, "up"), (server, client, "down")):
                t = threading.Thread(target=self._pump, args=(src, dst, direction, pair))
                t.daemon = True
                t.start()
                self._threads.append(t)

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        direction: str,
        pair: tuple[socket.socket, ...],
    ) -> None:
        try:
            while not self._stop.is_set():
                if self._frozen.is_set():
                    time.sleep(0.05)
                    continue
                if not select.select([src], [], [], 0.2)[0]:
                    continue
                data = src.recv(64 << 10)
                if not data:
                    break
                cut = False
                with self._lock:
                    budget = self._budget.get(direction)
                    if budget is not None:
                        if len(data) >= budget:
                            del self._budget[direction]
                            if self._then.pop(direction) == "freeze":
                                self._frozen.set()
                            else:
                                data, cut = data[:budget], True
                                self.cuts += 1
                        else:
                            self._budget[direction] = budget - len(data)
                    self.sent[direction] += len(data)
                while self._frozen.is_set() and not self._stop.is_set():
                    time.sleep(0.05)  # frozen while this data was in flight: hold it
                dst.sendall(data)
                if cut:
                    break
        except (OSError, ValueError):  # the other direction closed the sockets meanwhile
            pass
        finally:
            for s in pair:
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with suppress(OSError):
                    s.close()


@contextmanager
def proxy_to(port: int) -> Iterator[Proxy]:
    proxy = Proxy(port)
    try:
        yield proxy
    finally:
        proxy.close()
