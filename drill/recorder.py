"""The part the local stand-ins for outside services share: a threaded HTTP server on
127.0.0.1 whose answers can be made to fail (``error``) or hang (``hang``), so tests
prove that a failing or hung notification channel never holds up a failover.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal, Self

Mode = Literal["ok", "error", "hang"]


class Recorder:
    """Serves ``handler`` in a background thread; subclasses record what they accept."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str, *,
                 hang_max_s: float = 30.0) -> None:
        self.hang_max_s = hang_max_s
        self._mode: Mode = "ok"
        self._cond = threading.Condition()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, name=name, daemon=True)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    def set_mode(self, mode: Mode) -> None:
        """Answer normally (``ok``), with 500 (``error``), or hold requests (``hang``)."""
        with self._cond:
            self._mode = mode
            if mode == "hang":
                self._release.clear()
            else:
                self._release.set()

    def release(self) -> None:
        """Let held requests proceed (they are then answered normally)."""
        self.set_mode("ok")

    def _arrived(self) -> Mode:
        """The mode for a request that just arrived; holds it while the mode is ``hang``."""
        with self._cond:
            mode = self._mode
        if mode == "hang":
            self._release.wait(self.hang_max_s)
        return mode

    def start(self) -> Self:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release held requests, stop serving and close the socket."""
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
