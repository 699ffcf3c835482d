"""Serve the signer's WSGI app with gunicorn, programmatically: one worker process, threads.

gunicorn's master forks one ``gthread`` worker. Everything that holds state —
the decrypted keystore, the SQLite connection, the executor thread — is built
*in the worker* by the ``boot`` callable, never in the master: SQLite
connections and threads do not survive ``fork()``. A boot failure is reported
on stderr by the worker and ends the whole server with a non-zero status
(gunicorn halts on a worker boot error instead of respawning it).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from shared.errors import FailoverError
from signer.app import build_service
from signer.config import SignerConfig
from signer.http import create_app

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Boot = Callable[[], tuple[WSGIApp, Callable[[], None]]]
ErrorCode = Callable[[FailoverError], int]

BOOT_FAILED: Final = 1
_NO_REPORT: Final = 0


@dataclass(frozen=True)
class ServeOptions:
    """Where and how to listen; built from the signer's config by the CLI."""

    host: str
    port: int
    threads: int
    certfile: Path | None = None
    keyfile: Path | None = None
    graceful_timeout_s: int = 20
    boot_timeout_s: int = 120

    @property
    def bind(self) -> str:
        """gunicorn's bind string (IPv6 literals in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def scheme(self) -> str:
        """``https`` when TLS is configured."""
        return "https" if self.certfile else "http"


class _SignerApplication(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    """A gunicorn application whose WSGI callable is built inside the worker process."""

    def __init__(self, options: ServeOptions, boot: Boot, announce: Callable[[str], None],
                 error_code: ErrorCode, report_fd: int) -> None:
        self._options = options
        self._boot = boot
        self._announce = announce
        self._error_code = error_code
        self._report_fd = report_fd
        self._shutdown: Callable[[], None] | None = None
        super().__init__()

    def load_config(self) -> None:
        o = self._options
        settings: dict[str, object] = {
            "bind": [o.bind],
            "workers": 1,
            "worker_class": "gthread",
            "threads": o.threads,
            "proc_name": "witness-signer",
            "preload_app": False,  # build the service after fork(), in the worker
            # The worker's boot opens the keystore (Argon2id) and reconciles with
            # the chain; give it longer than gunicorn's default heartbeat.
            "timeout": o.boot_timeout_s,
            "graceful_timeout": o.graceful_timeout_s,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            # SECURITY: T3 — no unauthenticated runtime-management socket on the
            # signer host, and no client header may change the scheme or path
            # that signature bases (@target-uri, @path) are computed from.
            "control_socket_disable": True,
            "forwarded_allow_ips": "",
            "secure_scheme_headers": {},
            "post_worker_init": self._post_worker_init,
            "worker_exit": self._worker_exit,
        }
        if o.certfile is not None and o.keyfile is not None:
            settings["certfile"] = str(o.certfile)
            settings["keyfile"] = str(o.keyfile)
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> WSGIApp:
        """Build the service in the worker; on failure report it and stop the server."""
        try:
            app, self._shutdown = self._boot()
        except FailoverError as e:
            # SECURITY: T8 — FailoverError messages never carry secrets; no traceback.
            print(f"witness-signer: refusing to start: {e}", file=sys.stderr, flush=True)
            with contextlib.suppress(OSError):
                os.write(self._report_fd, bytes([self._error_code(e)]))
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        return app

    def _post_worker_init(self, worker: Any) -> None:
        host, port = worker.sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        self._announce(f"{self._options.scheme}://{shown}:{port}")

    def _worker_exit(self, server: Any, worker: Any) -> None:
        shutdown, self._shutdown = self._shutdown, None
        if shutdown is not None:
            shutdown()


def serve(options: ServeOptions, boot: Boot, *, announce: Callable[[str], None],
          error_code: ErrorCode) -> int:
    """Run gunicorn until SIGTERM/SIGINT; return the process exit status.

    ``boot`` runs in the worker process and returns the WSGI app and a shutdown
    callable (run when the worker exits). ``announce`` gets the listening URL
    once the worker is ready. If ``boot`` raises :class:`FailoverError`, its
    message goes to stderr and the status is ``error_code(e)``.
    """
    master_pid = os.getpid()
    read_fd, write_fd = os.pipe()
    try:
        application = _SignerApplication(options, boot, announce, error_code, write_fd)
        try:
            application.run()
            status = 0
        except SystemExit as e:
            if os.getpid() != master_pid:
                raise  # the forked worker leaves through gunicorn's own sys.exit()
            status = e.code if isinstance(e.code, int) else BOOT_FAILED
        os.set_blocking(read_fd, False)
        with contextlib.suppress(BlockingIOError):
            reported = os.read(read_fd, 1)
            if reported and reported[0] != _NO_REPORT:
                return reported[0]
        # A boot failure that is not ours (a bug): gunicorn's own status 3 or 4 would
        # read as "chain error" to a caller.
        booting = {Arbiter.WORKER_BOOT_ERROR, Arbiter.APP_LOAD_ERROR}
        return BOOT_FAILED if status in booting else status
    finally:
        os.close(read_fd)
        os.close(write_fd)


def serve_signer(config: SignerConfig, *, error_code: ErrorCode) -> int:
    """Serve the signer of ``config``: build, start and expose the service in the worker.

    Returns the exit status (``error_code(e)`` when the service refused to start).
    """
    options = ServeOptions(host=config.host, port=config.port, threads=config.threads,
                           certfile=config.tls_cert, keyfile=config.tls_key,
                           boot_timeout_s=max(120, 3 * int(config.confirm_timeout
                                                           .total_seconds())))

    def boot() -> tuple[WSGIApp, Callable[[], None]]:
        service = build_service(config)
        try:
            service.start()  # chain id check, arm on first start, reconcile, executor thread
            app: WSGIApp = create_app(service, config.max_body_bytes)
        except BaseException:
            service.close()
            raise
        return app, service.close

    def announce(url: str) -> None:
        policy = config.policy
        print(f"witness-signer listening on {url} (witness {policy.witness}, chain "
              f"{config.chain.name}, key mode {policy.key_mode}, approval {policy.approval})",
              flush=True)

    return serve(options, boot, announce=announce, error_code=error_code)
