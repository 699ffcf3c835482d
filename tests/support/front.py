"""The signer's HTTP front (`signer.serving.FrontServer`) on its own thread, for tests."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent
from gevent.threadpool import ThreadPool

from signer.serving import FrontServer, ServeOptions

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
WAIT_S = 10.0


@contextmanager
def running_front(app: WSGIApp, options: ServeOptions) -> Iterator[FrontServer]:
    """``app`` behind the signer's front on ``options`` (port 0: an ephemeral one), served
    on a thread with its own gevent hub and ``options.threads`` application threads."""
    ready: queue.Queue[FrontServer | BaseException] = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        pool = ThreadPool(options.threads)
        try:
            server = FrontServer(options, pool, None)
            server.application = app
            server.start()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            ready.put(e)
            pool.kill()
            return
        ready.put(server)
        while not stop.is_set():
            gevent.sleep(0.02)
        server.stop(timeout=1)
        pool.kill()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    got = ready.get(timeout=WAIT_S)
    if isinstance(got, BaseException):
        raise got
    try:
        yield got
    finally:
        stop.set()
        thread.join(WAIT_S)
