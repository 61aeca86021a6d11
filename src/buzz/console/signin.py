"""Sign-in and sign-out.

The token is POSTed once, from a form (never in a URL), and exchanged for a session cookie. The
operator signs in with `BUZZ_ADMIN_TOKEN`, a project's members with one of its console tokens
(`buzzc-…`); an API key opens nothing here. Failed attempts are counted per client address
(behind trusted proxies, the address they forwarded), and an address past the limit is answered
429 with `Retry-After` before its token is even looked at.
"""

from __future__ import annotations

import hmac
import logging
import math

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from buzz import console_tokens
from buzz.console.context import PREFIX, SIGN_IN, Context, Forbidden, SignInRequired, see_other
from buzz.console.forms import read_form
from buzz.console.sessions import COOKIE, SIGN_IN_COOKIE, SIGN_IN_LIFETIME
from buzz.proxy.auth import ANY_KEY

log = logging.getLogger("buzz.console")


def routes(ctx: Context) -> list[Route]:
    async def form(request: Request) -> Response:
        try:
            ctx.session(request)
        except SignInRequired:
            return _sign_in_page(ctx, request)
        return see_other(f"{PREFIX}/")

    async def sign_in(request: Request) -> Response:
        expected = ctx.signer.sign_in_csrf(request.cookies.get(SIGN_IN_COOKIE))
        submitted = await read_form(request)
        if expected is None or not hmac.compare_digest(submitted.get("csrf", "").encode(), expected.encode()):
            raise Forbidden
        address = ctx.proxies.client(dict(request.scope))
        wait = ctx.throttle.wait(address)
        if wait is not None:
            seconds = math.ceil(wait)
            error = f"Too many failed sign-ins from your address. Try again in {seconds} seconds."
            return _sign_in_page(ctx, request, error, 429, {"retry-after": str(seconds)})
        token = submitted.get("token", "").strip()
        admin = ctx.settings.admin_token
        if admin and hmac.compare_digest(token.encode(), admin.encode()):
            log.info("console sign-in: the operator")
            cookie = ctx.signer.operator(admin, ctx.settings.session_lifetime)
            return _signed_in(ctx, request, cookie)
        record = console_tokens.verify(ctx.store, token)
        if record is not None:
            log.info("console sign-in: project %s, console token %s", record.project, record.id)
            cookie = ctx.signer.member(record.project, record.id, ctx.settings.session_lifetime)
            return _signed_in(ctx, request, cookie)
        ctx.throttle.refused(address)
        ctx.counters.add("console_sign_in_refused")
        if ANY_KEY.fullmatch(token.encode()):
            error = "That is an API key, which never opens the console. Sign in with a console token (buzzc-…)."
        else:
            error = "That token opens nothing here. Check it, or ask the operator for a console token."
        return _sign_in_page(ctx, request, error, 401)

    async def sign_out(request: Request) -> Response:
        session = ctx.session(request)
        await ctx.form(request, session)
        response = see_other(SIGN_IN)
        response.delete_cookie(COOKIE, path=PREFIX, secure=ctx.secure(request), httponly=True, samesite="strict")
        return response

    return [
        Route(SIGN_IN, form, methods=["GET"]),
        Route(SIGN_IN, sign_in, methods=["POST"]),
        Route(f"{PREFIX}/sign-out", sign_out, methods=["POST"]),
    ]


def _sign_in_page(
    ctx: Context, request: Request, error: str = "", status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    cookie, csrf = ctx.signer.sign_in_form()
    response = ctx.page(request, "sign_in.html", None, status, error=error, sign_in_csrf=csrf)
    response.headers.update(headers or {})
    response.set_cookie(
        SIGN_IN_COOKIE,
        cookie,
        max_age=SIGN_IN_LIFETIME,
        path=PREFIX,
        secure=ctx.secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


def _signed_in(ctx: Context, request: Request, cookie: str) -> Response:
    response = see_other(f"{PREFIX}/")
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=ctx.settings.session_lifetime,
        path=PREFIX,
        secure=ctx.secure(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX, secure=ctx.secure(request), httponly=True, samesite="strict")
    return response
