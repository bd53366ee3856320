"""A real local HTTP server for the tracking-server checks: slow first answers, transient errors, hangs.

Not MLflow: a :class:`http.server.ThreadingHTTPServer` in a thread that answers ``GET`` like
MLflow's ``/health`` and REST API do (200 and a small JSON body), after a delay or with a
status the test chooses per request; and a socket that accepts connections but never answers
(a hung server).
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def http_server(delays: list[float] | None = None, statuses: list[int] | None = None) -> Iterator[tuple[str, list]]:
    """Serve on a free local port; request ``i`` waits ``delays[i]`` s and answers ``statuses[i]`` (then 0 s, 200).

    Yields
    ------
    (uri, seen)
        ``http://127.0.0.1:<port>`` and the list of (path, time answered) the server appends to.
    """
    delays, statuses = list(delays or []), list(statuses or [])
    seen: list[tuple[str, float]] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            with lock:
                i = len(seen)
                seen.append((self.path, time.perf_counter()))
            time.sleep(delays[i] if i < len(delays) else 0.0)
            status = statuses[i] if i < len(statuses) else 200
            body = json.dumps({"experiments": []} if "/api/" in self.path else {"status": "OK"}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up waiting: nothing to answer
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def hung_server() -> Iterator[str]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
