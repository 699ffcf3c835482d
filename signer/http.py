"""HTTP translation only: the one module that imports Flask.

Each route builds an :class:`HttpMessage` from the request exactly as received
(method, target URI from the Host header, fields, raw body bytes), has the
service verify it, and only then lets the service parse the body. Errors map to
status codes here, in one place; answers to authenticated requests are signed
by the service, bound to the request's signature. No traceback, no HTML.
"""

from __future__ import annotations

import logging
from email.utils import format_datetime
from urllib.parse import quote

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from shared.authhint import REASON_FIELD
from shared.errors import (
    AuthError,
    ChainError,
    FailoverError,
    PolicyError,
    RequestInvalidError,
)
from shared.httpsig import Headers, HttpMessage
from signer.auth import RejectedRequestError
from signer.lifecycle import RequestNotFoundError
from signer.service import Answer, Authenticated, RouteForbiddenError, SignerService

log = logging.getLogger(__name__)

_JSON = "application/json"


def _target_uri() -> str:
    """The target URI as the client sent it: scheme, Host header, raw request target."""
    env = request.environ
    raw = env.get("RAW_URI") or env.get("REQUEST_URI")
    if not isinstance(raw, str) or not raw:
        path = quote(env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", ""), safe="/;=,@:!$&'()*+")
        query = env.get("QUERY_STRING", "")
        raw = path + (f"?{query}" if query else "")
    if not raw.startswith("/"):
        return raw  # absolute-form request target
    return f"{request.scheme}://{request.headers.get('Host', '')}{raw}"


def _message() -> HttpMessage:
    return HttpMessage(request.method, _target_uri(), Headers(request.headers.items()),
                       request.get_data(cache=True))


def create_app(service: SignerService, max_body_bytes: int) -> Flask:
    """The signer's Flask app over ``service``; bodies over ``max_body_bytes`` get 413."""
    app = Flask(__name__)
    # One byte over the limit, so that a body without Content-Length (chunked) is read
    # to at most max_body_bytes + 1 and an oversized one is seen as such, not cut to size.
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes + 1

    def respond(answer: Answer) -> Response:
        auth: Authenticated | None = g.get("auth")
        rendered = service.render(auth, answer)
        return Response(rendered.body, status=rendered.status,
                        headers=list(rendered.headers.items()))

    def authenticate(route: str) -> Authenticated:
        # SECURITY: T3 — refuse a declared oversize body before reading any of it.
        length = request.content_length
        if length is not None and length > max_body_bytes:
            raise RequestInvalidError("body over the limit", status=413)
        # SECURITY: T3 — a chunked body declares no length: 413 here too, before the
        # digest check, so it is neither cut to size nor counted as a failed login.
        if len(request.get_data(cache=True)) > max_body_bytes:
            raise RequestInvalidError("body over the limit", status=413)
        try:
            auth = service.authenticate(_message(), route)
        except RouteForbiddenError as e:
            g.auth = e.auth  # authenticated: the 403 is signed like any answer
            raise
        g.auth = auth
        return auth

    def require_json(*, allow_empty: bool = False) -> bytes:
        body = request.get_data(cache=True)
        if allow_empty and not body:
            return body
        if request.mimetype != _JSON:
            raise RequestInvalidError("content type must be application/json", status=415)
        return body

    @app.get("/healthz", provide_automatic_options=False)
    def healthz() -> Response:
        # SECURITY: T3 — liveness only; nothing about the witness, keys or version.
        return respond(Answer(200, {"ok": True}))

    @app.get("/v1/status", provide_automatic_options=False)
    def status() -> Response:
        return respond(service.status(authenticate("status")))

    @app.post("/v1/failover", provide_automatic_options=False)
    def failover() -> Response:
        auth = authenticate("failover")
        return respond(service.failover(auth, require_json()))

    @app.get("/v1/requests/<request_id>", provide_automatic_options=False)
    def get_request(request_id: str) -> Response:
        return respond(service.get_request(authenticate("request"), request_id))

    @app.post("/v1/requests/<request_id>/approve", provide_automatic_options=False)
    def approve(request_id: str) -> Response:
        auth = authenticate("approve")
        return respond(service.approve(auth.keyid, request_id, require_json(allow_empty=True)))

    @app.post("/v1/requests/<request_id>/deny", provide_automatic_options=False)
    def deny(request_id: str) -> Response:
        auth = authenticate("deny")
        return respond(service.deny(auth.keyid, request_id, require_json(allow_empty=True)))

    @app.post("/v1/operator/<kind>", provide_automatic_options=False)
    def operator(kind: str) -> Response:
        auth = authenticate("operator")
        return respond(service.operator(auth, kind, require_json(allow_empty=True)))

    @app.after_request
    def harden(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    # ---- errors: one handler per class, the only place statuses are chosen ----------

    @app.errorhandler(AuthError)
    def unauthorized(e: AuthError) -> Response:
        # The authenticator logged a rejection already (a burst per second under a flood).
        log.log(logging.DEBUG if isinstance(e, RejectedRequestError) else logging.WARNING,
                "%s %r: unauthorized: %s", request.method, request.path, e)
        g.pop("auth", None)  # SECURITY: never sign an answer to an unverified request
        if not isinstance(e, RejectedRequestError):
            return respond(Answer(401, {"error": "unauthorized"}))
        # SECURITY: the reason is one of shared.authhint's coarse codes, chosen without
        # regard to whether the keyid exists; the keyid itself stays in the log. The
        # Date is the signer's clock: with "stale" it lets the client compute the skew.
        response = respond(Answer(401, {"error": "unauthorized",
                                        REASON_FIELD: e.rejection.reason}))
        response.headers["Date"] = format_datetime(e.rejection.at, usegmt=True)
        return response

    @app.errorhandler(PolicyError)
    def refused(e: PolicyError) -> Response:
        log.info("%s %r: refused (%d): %s", request.method, request.path, e.status, e)
        if e.status == 403:
            return respond(Answer(403, {"error": "forbidden"}))
        return respond(Answer(e.status, {"error": "refused", "state": "refused",
                                         "detail": str(e)}))

    @app.errorhandler(RequestInvalidError)
    def invalid(e: RequestInvalidError) -> Response:
        log.info("%s %r: invalid (%d): %s", request.method, request.path, e.status, e)
        body: dict[str, object] = {"error": "invalid request"}
        if e.status == 422 and g.get("auth") is not None:
            body["detail"] = str(e)  # only an authenticated client learns what was wrong
        return respond(Answer(e.status, body))

    @app.errorhandler(RequestNotFoundError)
    def not_found(e: RequestNotFoundError) -> Response:
        log.info("%s %r: %s", request.method, request.path, e)
        return respond(Answer(404, {"error": "not found"}))

    @app.errorhandler(ChainError)
    def chain_unavailable(e: ChainError) -> Response:
        log.warning("%s %r: chain: %s", request.method, request.path, e)
        return respond(Answer(503, {"error": "chain unavailable"}))

    @app.errorhandler(FailoverError)
    def failed(e: FailoverError) -> Response:
        log.error("%s %r: %s: %s", request.method, request.path, type(e).__name__, e)
        return respond(Answer(500, {"error": "internal error"}))

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        code = e.code or 500
        log.info("%s %r: HTTP %d", request.method, request.path, code)
        return respond(Answer(code, {"error": (e.name or "error").lower()}))

    @app.errorhandler(Exception)
    def crashed(e: Exception) -> Response:
        log.error("%s %r: unexpected error", request.method, request.path, exc_info=e)
        g.pop("auth", None)
        return Response(b'{"error":"internal error"}', status=500, content_type=_JSON)

    return app
