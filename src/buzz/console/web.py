"""The web console under `/console/`, as one ASGI app the gateway mounts when it starts.

Rendered on the server (Starlette for routing and static files, Jinja2 for templates), so every
page is plain HTML, and every asset is served from `static/`: the console needs no internet and
no build step. Every answer carries a strict Content-Security-Policy (scripts, styles and images
from this origin only, no inline code or style attribute, no framing), and pages are never
cached. The request path never imports this package: the gateway imports it once, at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from buzz.asgi import Message, Receive, Scope, Send, send_response
from buzz.billing.pricing import PriceBook
from buzz.config import Config
from buzz.console import keys, projects, signin, tokens, upstreams, usage
from buzz.console.context import (
    PREFIX,
    SIGN_IN,
    Context,
    Forbidden,
    NotFound,
    Settings,
    SignInRequired,
    see_other,
)
from buzz.console.forms import BadForm, FormTooLarge
from buzz.console.sessions import COOKIE, Session
from buzz.counters import Counters
from buzz.errors import where
from buzz.forwarded import TrustedProxies
from buzz.limits.base import Limiter
from buzz.pools.base import CredentialView
from buzz.proxy.auth import FailureThrottle
from buzz.store.base import Store, StoreUnavailable

log = logging.getLogger("buzz.console")
STATIC = f"{PREFIX}/static/"
CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = (
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
# Failed sign-ins an address may make in a window before it is turned away. A console token
# carries 190 random bits, so this is about the load of the attempts, not about guessing.
SIGN_IN_FAILURES = 10
SIGN_IN_WINDOW = 300.0


class Console:
    def __init__(
        self,
        store: Store,
        limiter: Limiter,
        prices: PriceBook,
        counters: Counters,
        changed: Callable[[], None],
        config: Config,
        proxies: TrustedProxies,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        credentials: Callable[[], Sequence[CredentialView]],
    ) -> None:
        settings = Settings(
            config.admin_token,
            config.console_session_lifetime,
            (config.public_url or "").startswith("https://"),
            config.report_raw_rows_limit,
        )
        throttle = FailureThrottle(SIGN_IN_FAILURES, SIGN_IN_WINDOW, clock)
        ctx = self._ctx = Context(store, limiter, prices, counters, changed, settings, proxies, throttle, wall_clock)
        routes: list[BaseRoute] = [
            Route(PREFIX, self._home, methods=["GET"]),
            Route(f"{PREFIX}/", self._home, methods=["GET"]),
            *signin.routes(ctx),
            *keys.routes(ctx),
            *projects.routes(ctx),
            *upstreams.routes(ctx, credentials),
            *tokens.routes(ctx),
            *usage.routes(ctx),
            Mount(STATIC.rstrip("/"), StaticFiles(packages=[("buzz.console", "static")])),
        ]
        self._app = Starlette(
            routes=routes,
            exception_handlers={
                SignInRequired: self._sign_in_required,
                NotFound: self._not_found,
                404: self._not_found,
                405: self._not_found,
                Forbidden: self._forbidden,
                FormTooLarge: self._too_large,
                BadForm: self._bad_form,
                Exception: self._internal,
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cache = b"no-cache" if str(scope["path"]).startswith(STATIC) else b"no-store"
        started = False

        async def secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = message.get("headers") or []
                assert isinstance(headers, list)
                message["headers"] = [*headers, *_SECURITY_HEADERS, (b"cache-control", cache)]
            await send(message)

        try:
            await self._app(scope, receive, secured)
        except Exception as exc:
            # Starlette answered 500 and re-raised; the message could quote the request, so only
            # the exception's type and place are logged.
            log.error("console internal error %s at %s", type(exc).__name__, where(exc))
            if not started:
                await send_response(send, 500, b"internal error", b"text/plain; charset=utf-8", _SECURITY_HEADERS)

    async def _home(self, request: Request) -> Response:
        # Spend over time is what most visits are for; every other page is one click away.
        self._ctx.session(request)
        return see_other(usage.USAGE)

    def _session_or_none(self, request: Request) -> Session | None:
        try:
            return self._ctx.session(request)
        except SignInRequired:
            return None

    def _error(self, request: Request, status: int, title: str, message: str) -> Response:
        session = self._session_or_none(request)
        return self._ctx.page(request, "error.html", session, status, section="", title=title, message=message)

    async def _sign_in_required(self, request: Request, exc: Exception) -> Response:
        response = see_other(SIGN_IN)
        if COOKIE in request.cookies:  # forged, expired or ended: the browser may forget it
            response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            return self._error(request, 405, "Not allowed", "This page does not take that method.")
        return self._error(request, 404, "Not found", "There is nothing here, or nothing you may see.")

    async def _forbidden(self, request: Request, exc: Exception) -> Response:
        message = "The form was missing its security token, or it had expired. Go back, reload the page, and try again."
        return self._error(request, 403, "Refused", message)

    async def _too_large(self, request: Request, exc: Exception) -> Response:
        return self._error(request, 413, "Too large", "The console's forms are a few short fields.")

    async def _bad_form(self, request: Request, exc: Exception) -> Response:
        return self._error(request, 400, "Not a form", "The request was not a form this console sent.")

    async def _internal(self, request: Request, exc: Exception) -> Response:
        # No session lookup: what failed may be the store itself.
        if isinstance(exc, StoreUnavailable):
            message = "The database is unreachable. Requests through the gateway go on; try this page again shortly."
            return self._ctx.page(request, "error.html", None, 503, section="", title="Unavailable", message=message)
        message = "Something went wrong inside buzz. It has been logged."
        return self._ctx.page(request, "error.html", None, 500, section="", title="Internal error", message=message)
