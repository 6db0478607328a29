"""A PostgreSQL wire-protocol proxy that counts round trips and can add latency.

Every query psycopg2 sends is one frontend message that the client then waits on: a simple
Query ('Q'), or a Sync ('S') closing an extended-protocol batch. Counting those messages on the
wire counts the client's round trips exactly, whatever the code above the driver does.
`delay` seconds are added before each chunk the client sends, i.e. to every round trip, as a
far database (Neon in another region) would. `cut()` makes the database unreachable (every
connection dropped, new ones refused) until `restore()`, without touching the shared server.
"""

import socket
import struct
import threading
import time

WAITING_MESSAGES = {ord("Q"), ord("S")}
SSL_REQUEST = 80877103
GSS_REQUEST = 80877104


class RoundTripProxy:
    """Forwards 127.0.0.1:`port` to the PostgreSQL at `target`, counting round trips; `cut()`
    and `restore()` take the database away and give it back."""

    def __init__(self, target: tuple[str, int], delay: float = 0.0) -> None:
        self.target = target
        self.delay = delay
        self.round_trips = 0
        self.queries: list[str] = []  # SQL of every simple Query since reset(), as sent
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._open = True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.round_trips = 0
            self.queries = []

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._sockets.update((client, upstream))
            threading.Thread(target=self._from_client, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _from_client(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        started = False  # past the startup packet (which has no type byte)
        try:
            while data := client.recv(65536):
                buffer += data
                while True:
                    if not started:
                        if len(buffer) < 8:
                            break
                        length, code = struct.unpack("!II", buffer[:8])
                        if len(buffer) < length:
                            break
                        # SSL/GSS requests are answered with one byte; the real startup follows
                        started = code not in (SSL_REQUEST, GSS_REQUEST)
                        buffer = buffer[length:]
                        continue
                    if len(buffer) < 5:
                        break
                    kind, length = buffer[0], struct.unpack("!I", buffer[1:5])[0]
                    if len(buffer) < 1 + length:
                        break
                    if kind in WAITING_MESSAGES:
                        with self._lock:
                            self.round_trips += 1
                            if kind == ord("Q"):  # psycopg2 sends every statement this way
                                self.queries.append(buffer[5:length].decode(errors="replace"))
                    buffer = buffer[1 + length :]
                if self.delay:
                    time.sleep(self.delay)
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, upstream)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source, sink)

    def cut(self) -> None:
        """Drop every connection and refuse new ones, as a database gone away would."""
        self._open = False
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        _close(*sockets)
        for sock in sockets:
            sock.close()

    def restore(self) -> None:
        self._open = True

    def close(self) -> None:
        self.cut()
        self._listener.close()


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
