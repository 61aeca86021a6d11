"""Console tokens: the list, a new token (shown once), and revocation behind a confirm step.

The operator manages every project's tokens; a member manages its own project's, so a team can
let a colleague in, or shut a leaked token out, without waiting for the operator. A token opens
nothing beyond its project, so a member can give no one more than the member has.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from buzz import console_tokens
from buzz.changes import InvalidChange, NewConsoleToken, convert
from buzz.console import present
from buzz.console.context import PREFIX, Context, NotFound, see_other
from buzz.console.sessions import Session
from buzz.store.base import ConsoleTokenRecord

log = logging.getLogger("buzz.console")
TOKENS = f"{PREFIX}/tokens"


def routes(ctx: Context) -> list[Route]:
    def token_for(session: Session, token_id: str) -> ConsoleTokenRecord:
        token = ctx.store.find_console_token(token_id)
        if token is None or not session.sees(token.project):
            raise NotFound
        return token

    def listing_page(
        request: Request, session: Session, name: str = "", project: str = "", error: str = ""
    ) -> Response:
        shown = session.project or request.query_params.get("project") or None
        views = [present.token_view(token) for token in ctx.store.list_console_tokens(shown)]
        return ctx.page(
            request,
            "tokens.html",
            session,
            400 if error else 200,
            section="tokens",
            tokens=views,
            projects=ctx.project_names(session),
            shown=shown,
            name=name,
            project=project or shown or "",
            error=error,
        )

    async def listing(request: Request) -> Response:
        return listing_page(request, ctx.session(request))

    async def create(request: Request) -> Response:
        session = ctx.session(request)
        form = await ctx.form(request, session)
        project = ctx.chosen_project(session, form)
        try:
            label = convert({"name": form.get("name", "").strip() or None}, NewConsoleToken).name
        except InvalidChange as exc:
            return listing_page(request, session, form.get("name", ""), project, str(exc))
        made = console_tokens.generate()
        record = ctx.store.create_console_token(made.token_id, project, label, made.secret_hash)
        log.info("console: console token %s created for project %s by %s", record.id, project, session.who)
        # The token is in this response only: never in a URL, a log, or the database.
        view = present.token_view(record)
        return ctx.page(request, "token_created.html", session, section="tokens", token=view, secret=made.token)

    async def confirm_revoke(request: Request) -> Response:
        session = ctx.session(request)
        token = token_for(session, request.path_params["token_id"])
        current = token.id == session.token_id
        view = present.token_view(token)
        return ctx.page(request, "confirm_revoke_token.html", session, section="tokens", token=view, current=current)

    async def revoke(request: Request) -> Response:
        session = ctx.session(request)
        await ctx.form(request, session)
        token = token_for(session, request.path_params["token_id"])
        if ctx.store.revoke_console_token(token.id):
            log.info("console: console token %s revoked by %s", token.id, session.who)
        return see_other(f"{TOKENS}?done=token-revoked")

    return [
        Route(TOKENS, listing, methods=["GET"]),
        Route(TOKENS, create, methods=["POST"]),
        Route(f"{TOKENS}/{{token_id}}/revoke", confirm_revoke, methods=["GET"]),
        Route(f"{TOKENS}/{{token_id}}/revoke", revoke, methods=["POST"]),
    ]
