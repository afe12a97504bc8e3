"""The app on uvicorn in a background thread, on a free loopback port: for tests, benchmarks and notebooks."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


@contextlib.contextmanager
def serve_in_thread(app, *, backlog: int = 128, start_timeout: float = 30.0, **config):
    """Serves ``app`` with uvicorn (``config``: more ``uvicorn.Config`` options) in a daemon thread; yields the
    port. The server stops when the block ends.

    Raises:
        RuntimeError: uvicorn did not start within ``start_timeout`` seconds.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            sock.close()
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
