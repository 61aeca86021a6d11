"""What every console page shares: its dependencies, who is signed in, the CSRF check, rendering.

Each page module (`signin`, `keys`, `projects`, `tokens`, `upstreams`, `usage`) takes one `Context`
and returns its routes; nothing here is global, so a test can build a console around any store and
clock.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from buzz.billing.pricing import PriceBook
from buzz.console import forms, present
from buzz.console.sessions import COOKIE, Session, Signer
from buzz.counters import Counters
from buzz.forwarded import TrustedProxies
from buzz.limits.base import Limiter
from buzz.proxy.auth import FailureThrottle
from buzz.store.base import Store

PREFIX = "/console"
SIGN_IN = f"{PREFIX}/sign-in"


class SignInRequired(Exception):
    """No session, or one that is forged, expired or ended: answered with a 303 to sign-in."""


class NotFound(Exception):
    """No such page or object, or one of another project's: the two look the same."""


class Forbidden(Exception):
    """A state-changing request without the session's CSRF token."""


@dataclass(frozen=True, slots=True)
class Settings:
    admin_token: str | None
    session_lifetime: int
    public_https: bool  # server.public_url is https: cookies are Secure
    raw_rows_limit: int  # reports.raw_rows_limit


class Context:
    def __init__(
        self,
        store: Store,
        limiter: Limiter,
        prices: PriceBook,
        counters: Counters,
        changed: Callable[[], None],
        settings: Settings,
        proxies: TrustedProxies,
        throttle: FailureThrottle,
        wall_clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.prices = prices  # what the Cache page prices cache writes and reads at
        self.counters = counters
        self.changed = changed  # the request path must reread keys and limits
        self.settings = settings
        self.proxies = proxies
        self.throttle = throttle
        self.wall_clock = wall_clock
        self._signer: Signer | None = None
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("buzz.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    @property
    def signer(self) -> Signer:
        # The secret is made on first use, in the database, so every process signs alike.
        if self._signer is None:
            self._signer = Signer(self.store.console_secret(secrets.token_bytes(32)), self.wall_clock)
        return self._signer

    def secure(self, request: Request) -> bool:
        """Cookies are Secure when the public URL is https, or this request came over https."""
        return self.settings.public_https or self.proxies.scheme_and_host(dict(request.scope))[0] == "https"

    def session(self, request: Request) -> Session:
        session = self.signer.session(request.cookies.get(COOKIE), self.settings.admin_token)
        if session is None:
            raise SignInRequired
        if session.project is None:
            return session
        # A project's session lasts only as long as its console token: one lookup a request.
        assert session.token_id is not None
        token = self.store.find_console_token(session.token_id)
        if token is None or token.revoked_at is not None or token.project != session.project:
            raise SignInRequired
        return replace(session, label=token.name or token.id)

    async def form(self, request: Request, session: Session) -> dict[str, str]:
        """A POSTed form, once its CSRF token is the session's; else Forbidden."""
        form = await forms.read_form(request)
        if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            raise Forbidden
        return form

    def page(
        self, request: Request, template: str, session: Session | None, status: int = 200, **values: Any
    ) -> HTMLResponse:
        notice = present.NOTICES.get(request.query_params.get("done", ""))
        html = self.templates.get_template(template).render(
            session=session, csrf=session.csrf if session else "", notice=notice, **values
        )
        return HTMLResponse(html, status)

    def project_names(self, session: Session) -> list[str]:
        """The projects a session may pick from: every one for the operator, its own for a member."""
        if session.project is not None:
            return [session.project]
        return [project.name for project in self.store.list_projects()]

    def chosen_project(self, session: Session, form: dict[str, str]) -> str:
        """The project a form names, which must be one the session sees; a member's own if none."""
        name = form.get("project", "").strip() or (session.project or "")
        if not session.sees(name) or self.store.project(name) is None:
            raise NotFound
        return name


def see_other(url: str) -> Response:
    return RedirectResponse(url, 303)
