"""Serve the signer's WSGI app: gevent reads each request, a bounded thread pool runs the app.

One process. Each connection is a greenlet on gevent's event loop (``gevent.pywsgi``),
which reads the request line, the headers and the whole body (up to the size limit)
under deadlines; only a complete request is handed to a pool of ``signer.threads``
native threads that runs the Flask app. A slow or stalled client therefore holds a
greenlet and a socket, never an application thread (threat T10, docs/threat-model.md).

Nothing is monkey-patched: the app, the service's executor thread, ``threading.Event``
and SQLite run on ordinary threads; only the sockets of the HTTP front are gevent's.

The glue written here, on gevent's documented extension points (``WSGIServer.handle``,
``WSGIHandler.handle_one_request``/``run_application``): the per-source connection cap,
the header and body deadlines, the TLS handshake under the header deadline, and the
hand-off to the thread pool in fair turns between sources (:class:`AppGate`, whose
rules are the pure :mod:`signer.admission`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import gevent
from gevent import ssl as gssl
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import Input, LoggingLogAdapter, WSGIHandler, WSGIServer
from gevent.threadpool import ThreadPool

from shared.errors import FailoverError
from signer.admission import FairShare, FrontCounts, RefusalPacer, SourceLimiter, source_of
from signer.app import build_service
from signer.config import SignerConfig
from signer.http import create_app

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Boot = Callable[[Callable[[], FrontCounts]], tuple[WSGIApp, Callable[[], None]]]
ErrorCode = Callable[[FailoverError], int]
Response = tuple[str, list[tuple[str, str]], list[bytes]]

BOOT_FAILED: Final = 1


@dataclass(frozen=True)
class ServeOptions:
    """Where and how to listen, and the limits on each connection; built from the config."""

    host: str
    port: int
    threads: int
    certfile: Path | None = None
    keyfile: Path | None = None
    graceful_timeout_s: float = 20
    max_body_bytes: int = 8192
    header_timeout_s: float = 10
    body_timeout_s: float = 10
    max_connections: int = 512
    max_connections_per_source: int = 32
    threads_per_source: int = 1
    refusals_per_source_per_s: float = 10
    refusal_burst_per_source: int = 10
    refusals_per_s: float = 100
    backlog: int = 1024
    port_setting: str = "signer.port"  # named when the port cannot be bound

    @property
    def scheme(self) -> str:
        """``https`` when TLS is configured."""
        return "https" if self.certfile else "http"


def _run_app(app: WSGIApp, environ: dict[str, Any]) -> Response:
    """Call the WSGI app to completion (in a pool thread); return status, headers, body."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [(status, headers)]
        return written.append

    result = app(environ, start_response)
    try:
        written.extend(bytes(chunk) for chunk in result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the WSGI app returned without calling start_response")
    return started[0][0], started[0][1], written


class AppGate:
    """Hands the ``slots`` application threads to waiting requests, fairly between sources.

    Runs on the gevent hub only (every caller is a connection's greenlet), so it needs
    no lock. Every request queues under its source in a
    :class:`~signer.admission.FairShare`; a free slot goes to the waiter of the source
    holding the fewest, and no source holds more than ``per_source``
    (``signer.threads_per_source``, 1 by default) at once. ``slots`` equals the thread
    pool's size: the pool's own first-come queue never holds a request.
    """

    def __init__(self, slots: int, *, per_source: int = 1) -> None:
        self._free = slots
        self._share: FairShare[Event] = FairShare(per_source=min(per_source, slots))

    @property
    def waiting(self) -> int:
        """Requests waiting for an application thread."""
        return len(self._share)

    def run(self, source: str, work: Callable[[], Response]) -> Response:
        """Run ``work`` once ``source`` is given a slot; give the slot back after."""
        turn = Event()
        self._share.push(source, turn)
        self._hand_out()
        try:
            turn.wait()
        except BaseException:
            # Killed while waiting (shutdown): leave the queue, or give back the slot
            # that was handed over in the meantime.
            if not self._share.remove(source, turn):
                self._release(source)
            raise
        try:
            return work()
        finally:
            self._release(source)

    def _release(self, source: str) -> None:
        self._share.finish(source)
        self._free += 1
        self._hand_out()

    def _hand_out(self) -> None:
        while self._free > 0 and (granted := self._share.pop()) is not None:
            self._free -= 1
            granted[1].set()


class _Handler(WSGIHandler):  # type: ignore[misc]  # gevent is untyped
    """One connection: deadlines on the request, the app run in the server's thread pool."""

    server: FrontServer
    wsgi_input: Any
    _deadline: gevent.Timeout
    _refused = False  # this request's answer: status 400 or more, not signed
    _proven = False  # the last answer on this connection was signed (to a verified request)

    @functools.cached_property
    def source(self) -> str:
        """The connection's source (:func:`~signer.admission.source_of`), worked out once."""
        address = self.client_address
        return source_of(str(address[0] if isinstance(address, tuple) else address))

    def handle_one_request(self) -> Any:
        server = self.server
        # SECURITY: T3/T10 — a source whose requests keep being refused unauthenticated
        # is read at RefusalPacer's pace: until its turn, not a byte of its next request
        # is read, so a flood of forged requests from one address costs a bounded share
        # of the CPU. Sources without refusals are never delayed, and neither is a
        # connection whose last answer was signed: only a client holding a configured
        # key gets one, so the watcher's kept-alive connection is not queued behind a
        # flood from its own address.
        delay, charge = (0.0, 0.0) if self._proven else server.pacer.admit(self.source,
                                                                            server.clock())
        if delay > server.options.header_timeout_s:
            # A turn further off than the header deadline is not waited for: the
            # connection is closed unread, so a paced connection, like any other,
            # ends within the deadlines instead of holding a place for long.
            server.pacer.settle(self.source, server.clock(), charge=charge, refused=False)
            server.closed_unread += 1
            return None
        if delay > 0:
            server.paced_requests += 1
            gevent.sleep(delay)
        self._refused = self._proven = False
        try:
            result = self._read_and_answer()
        finally:
            server.pacer.settle(self.source, server.clock(), charge=charge,
                                refused=self._refused)
        return result

    def _read_and_answer(self) -> Any:
        # SECURITY: T10 — the request line and headers (and, for a kept-alive connection,
        # the wait for them) must arrive within header_timeout_s, however slowly they
        # trickle in; an idle or dribbling connection is closed, not waited on.
        self._deadline = gevent.Timeout.start_new(self.server.options.header_timeout_s)
        try:
            result = super().handle_one_request()
        except gevent.Timeout as t:
            if t is not self._deadline:
                raise
            return None  # close the connection
        finally:
            self._deadline.cancel()
        if isinstance(result, tuple):  # gevent answers a malformed request itself
            self._refused = True
        return result

    def get_environ(self) -> dict[str, Any]:
        env: dict[str, Any] = super().get_environ()
        env["RAW_URI"] = self.path  # the request target as sent: signature bases use it
        return env

    def run_application(self) -> None:
        self._deadline.cancel()
        options = self.server.options
        raw: Any = self.wsgi_input
        body, complete = b"", False
        # SECURITY: T10 — the whole body (at most max_body_bytes + 1, so the app can tell
        # it is over the limit) must arrive within body_timeout_s; the app thread is
        # taken only once it has.
        deadline = gevent.Timeout.start_new(options.body_timeout_s)
        try:
            if raw.content_length is not None and raw.content_length > options.max_body_bytes:
                pass  # the app answers 413 from Content-Length; the body is never read
            else:
                body = raw.read(options.max_body_bytes + 1)
                complete = raw.chunked_input is False or len(body) <= options.max_body_bytes
        except gevent.Timeout as t:
            if t is not deadline:
                raise
            self._give_up("408 Request Timeout")
            return
        except OSError:  # the client went away or sent a broken chunked body
            self._give_up("400 Bad Request")
            return
        finally:
            deadline.cancel()
        # The socket's body is consumed (or the connection closes): nothing left to discard.
        self.wsgi_input = Input(io.BytesIO(), 0)
        if not complete:
            self.close_connection = True
        self.environ["wsgi.input"] = io.BytesIO(body)
        self.environ["wsgi.input_terminated"] = True
        # SECURITY: T3/T10 — complete requests wait for an application thread in
        # per-source turns: a flood from one address cannot queue ahead of another's.
        status, headers, chunks = self.server.gate.run(
            self.source,
            lambda: self.server.app_threads.spawn(_run_app, self.application,
                                                  self.environ).get())
        self._proven = any(name.lower() == "signature" for name, _ in headers)
        self._refused = int(status[:3]) >= 400 and not self._proven
        with gevent.Timeout(options.body_timeout_s, False):
            self.start_response(status, headers)
            for chunk in chunks:
                self.write(chunk)
            if not self.headers_sent:
                self.write(b"")
            return
        self.close_connection = True  # the client does not read its answer

    def log_request(self) -> None:
        """No access log: gevent formats a line per request even with ``log=None``."""

    def _give_up(self, status: str) -> None:
        self._refused = True
        self.wsgi_input = Input(io.BytesIO(), 0)
        self.close_connection = True
        with gevent.Timeout(1, False), contextlib.suppress(OSError):  # it may be gone
            self.start_response(status, [("Content-Length", "0"), ("Connection", "close")])
            self.write(b"")


class FrontServer(WSGIServer):  # type: ignore[misc]  # gevent is untyped
    """The listener: per-source cap and TLS handshake before any HTTP is read.

    Runs on the gevent hub of the thread that starts it; ``pool`` (``threads`` native
    threads) runs the app, handed requests by :class:`AppGate` in per-source turns.
    """

    handler_class = _Handler

    def __init__(self, options: ServeOptions, pool: ThreadPool,
                 tls: gssl.SSLContext | None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        env = {"wsgi.url_scheme": options.scheme, "SERVER_NAME": options.host,
               "wsgi.multithread": True}
        # Malformed requests are the client's fault: one INFO line each, not ERROR.
        super().__init__((options.host, options.port), backlog=options.backlog,
                         spawn=Pool(options.max_connections), log=None,
                         error_log=LoggingLogAdapter(log, logging.INFO), environ=env)
        self.options = options
        self.app_threads = pool
        self.gate = AppGate(options.threads, per_source=options.threads_per_source)
        self.tls = tls
        self.sources = SourceLimiter(options.max_connections_per_source)
        self.pacer = RefusalPacer(options.refusals_per_source_per_s,
                                  options.refusal_burst_per_source, options.refusals_per_s)
        self.clock = clock  # monotonic seconds, for the pacer (a test may freeze it)
        self.paced_requests = 0
        self.closed_unread = 0

    def counts(self) -> FrontCounts:
        """The pacing's figures now (read from the metrics thread: plain ints and a len)."""
        return FrontCounts(len(self.pacer), self.paced_requests, self.closed_unread)

    def handle(self, sock: Any, address: Any) -> None:
        source = source_of(str(address[0]))
        # SECURITY: T10 — one source may hold at most max_connections_per_source
        # connections; one more is closed before a byte of it is read.
        if not self.sources.admit(source):
            sock.close()
            return
        # gevent writes a response's headers and body in separate sends: with Nagle on,
        # a keep-alive client waited ~44 ms per answer for its delayed ACK.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.tls is not None:
                sock = self._handshake(sock)
                if sock is None:
                    return
            super().handle(sock, address)
        finally:
            self.sources.release(source)

    def _handshake(self, sock: Any) -> Any:
        """The TLS socket, or None (closed) when the handshake fails or misses the deadline."""
        assert self.tls is not None
        tls_sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with gevent.Timeout(self.options.header_timeout_s, False):
            try:
                tls_sock.do_handshake()
            except OSError:  # ssl.SSLError included: a bad or aborted handshake
                pass
            else:
                return tls_sock
        tls_sock.close()
        return None


def _reason(error: OSError) -> str:
    """``Address already in use`` as ``address already in use``: the tail of one sentence."""
    # gevent appends the address to strerror; the errno's own text is the plain reason.
    text = os.strerror(error.errno) if error.errno else str(error.strerror or error)
    return text[:1].lower() + text[1:]


def _tls_context(options: ServeOptions) -> gssl.SSLContext | None:
    if options.certfile is None or options.keyfile is None:
        return None
    context = gssl.SSLContext(gssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = gssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(options.certfile), str(options.keyfile))
    return context


def serve(options: ServeOptions, boot: Boot, *, announce: Callable[[str], None],
          error_code: ErrorCode) -> int:
    """Listen, build the app, serve until SIGTERM/SIGINT; return the process exit status.

    ``boot`` gets the front's :meth:`FrontServer.counts` and returns the WSGI app and a
    shutdown callable (run on the way out).
    ``announce`` gets the listening URL once the app is ready. If ``boot`` raises
    :class:`FailoverError`, its message goes to stderr and the status is
    ``error_code(e)``.
    """
    try:
        tls = _tls_context(options)
    except (OSError, gssl.SSLError) as e:
        print(f"witness-signer: cannot load the TLS certificate or key (signer.tls_cert, "
              f"signer.tls_key): {_reason(e)}", file=sys.stderr, flush=True)
        return BOOT_FAILED
    pool = ThreadPool(options.threads)
    try:
        server = FrontServer(options, pool, tls)
        server.init_socket()
    except OSError as e:
        pool.kill()
        # One line naming the setting, e.g. "... 127.0.0.1:8443 (signer.port): address
        # already in use"; no traceback.
        print(f"witness-signer: cannot listen on {options.host}:{options.port} "
              f"({options.port_setting}): {_reason(e)}", file=sys.stderr, flush=True)
        return BOOT_FAILED
    try:
        try:
            app, shutdown = boot(server.counts)
        except FailoverError as e:
            # SECURITY: T8 — FailoverError messages never carry secrets; no traceback.
            print(f"witness-signer: refusing to start: {e}", file=sys.stderr, flush=True)
            return error_code(e)
        try:
            server.application = app
            server.start()
            host, port = server.socket.getsockname()[:2]
            shown = f"[{host}]" if ":" in str(host) else str(host)
            announce(f"{options.scheme}://{shown}:{port}")
            stopping = Event()
            handlers = [gevent.signal_handler(s, stopping.set)
                        for s in (signal.SIGTERM, signal.SIGINT)]
            stopping.wait()
            for h in handlers:
                h.cancel()
            server.stop(timeout=options.graceful_timeout_s)
        finally:
            shutdown()
    finally:
        server.close()
        pool.kill()
    return 0


def serve_signer(config: SignerConfig, *, error_code: ErrorCode) -> int:
    """Serve the signer of ``config``: build and start the service, then expose it.

    Returns the exit status (``error_code(e)`` when the service refused to start).
    """
    options = ServeOptions(host=config.host, port=config.port, threads=config.threads,
                           certfile=config.tls_cert, keyfile=config.tls_key,
                           max_body_bytes=config.max_body_bytes,
                           header_timeout_s=config.header_timeout_s,
                           body_timeout_s=config.body_timeout_s,
                           max_connections=config.max_connections,
                           max_connections_per_source=config.max_connections_per_source,
                           threads_per_source=config.threads_per_source,
                           refusals_per_source_per_s=config.refusals_per_source_per_s,
                           refusal_burst_per_source=config.refusal_burst_per_source,
                           refusals_per_s=config.refusals_per_s)

    def boot(front: Callable[[], FrontCounts]) -> tuple[WSGIApp, Callable[[], None]]:
        service = build_service(config)
        closers: list[Callable[[], None]] = [service.close]

        def shutdown() -> None:
            for close in reversed(closers):
                close()

        try:
            service.start()  # chain id check, arm on first start, reconcile, executor thread
            app: WSGIApp = create_app(service, config.max_body_bytes)
            if config.metrics_port is not None:
                # prometheus_client loads only when [metrics] is set.
                from signer.metrics import start_metrics  # noqa: PLC0415

                closers.append(start_metrics(config, service, front))
        except BaseException:
            shutdown()
            raise
        return app, shutdown

    def announce(url: str) -> None:
        policy = config.policy
        print(f"witness-signer listening on {url} (witness {policy.witness}, chain "
              f"{config.chain.name}, key mode {policy.key_mode}, approval {policy.approval})",
              flush=True)

    return serve(options, boot, announce=announce, error_code=error_code)
