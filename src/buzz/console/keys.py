"""Keys: the list, a new key (its secret shown once), edits, and revocation behind a confirm step.

A member sees and changes its own project's keys only; any other key is a 404, whatever the URL
or the form says. Every change calls `changed`, so the gateway applies it from its next request.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from buzz import reports
from buzz.changes import InvalidChange, KeyChanges, NewKey, convert
from buzz.console import forms, present
from buzz.console.context import PREFIX, Context, NotFound, see_other
from buzz.console.sessions import Session
from buzz.limits.base import Limiter, LimiterUnavailable, Limits, Remaining, Scope
from buzz.proxy.auth import generate_key
from buzz.store.base import KeyRecord, Totals

log = logging.getLogger("buzz.console")
KEYS = f"{PREFIX}/keys"


def routes(ctx: Context) -> list[Route]:
    async def key_for(session: Session, key_id: str) -> KeyRecord:
        key = await ctx.store.find_key(key_id)
        if key is None or not session.sees(key.project):
            raise NotFound
        return key

    async def listing(request: Request) -> Response:
        session = ctx.session(request)
        shown = session.project or request.query_params.get("project") or None
        keys = ctx.store.list_keys(shown)
        now = ctx.wall_clock()
        views = [present.key_view(key, now) for key in keys]
        last_used = await asyncio.to_thread(ctx.store.last_used, shown)
        spend = await asyncio.to_thread(reports.key_spend, ctx.store, shown, ctx.wall_clock())
        activity, reachable = await _activity(ctx.limiter, keys, last_used, spend)
        projects = ctx.project_names(session)
        return ctx.page(
            request,
            "keys.html",
            session,
            section="keys",
            keys=views,
            activity=activity,
            limiter_reachable=reachable,
            projects=projects,
            shown=shown,
        )

    async def new(request: Request) -> Response:
        session = ctx.session(request)
        fields = {name: "" for name in ("name", *forms.LIMIT_FIELDS, "expires", "models")}
        project = session.project or request.query_params.get("project", "")
        return _form_page(ctx, request, session, fields, project)

    async def create(request: Request) -> Response:
        session = ctx.session(request)
        form = await ctx.form(request, session)
        project = ctx.chosen_project(session, form)
        try:
            key = convert({**forms.key_values(form), "project": project}, NewKey)
        except InvalidChange as exc:
            return _form_page(ctx, request, session, form, project, str(exc))
        made = generate_key()
        record = ctx.store.create_key(made.key_id, key.project, key.name or None, made.secret_hash, *key.stored())
        ctx.changed()
        log.info("console: key %s created in project %s by %s", record.id, record.project, session.who)
        view = present.key_view(record, ctx.wall_clock())
        # The secret is in this response only: never in a URL, a log, or the database.
        return ctx.page(request, "key_created.html", session, section="keys", key=view, secret=made.token)

    async def detail(request: Request) -> Response:
        session = ctx.session(request)
        key = await key_for(session, request.path_params["key_id"])
        return _detail_page(ctx, request, session, key, present.key_fields(key))

    async def update(request: Request) -> Response:
        session = ctx.session(request)
        form = await ctx.form(request, session)
        key = await key_for(session, request.path_params["key_id"])
        if not key.active:
            raise NotFound
        try:
            changes = convert(forms.key_values(form), KeyChanges)
        except InvalidChange as exc:
            return _detail_page(ctx, request, session, key, form, str(exc))
        ctx.store.update_key(key.id, changes.columns())
        ctx.changed()
        log.info("console: key %s changed by %s", key.id, session.who)
        return see_other(f"{KEYS}/{key.id}?done=key-saved")

    async def confirm_revoke(request: Request) -> Response:
        session = ctx.session(request)
        key = await key_for(session, request.path_params["key_id"])
        view = present.key_view(key, ctx.wall_clock())
        return ctx.page(request, "confirm_revoke_key.html", session, section="keys", key=view)

    async def revoke(request: Request) -> Response:
        session = ctx.session(request)
        await ctx.form(request, session)
        key = await key_for(session, request.path_params["key_id"])
        if ctx.store.revoke_key(key.id):
            ctx.changed()
            log.info("console: key %s revoked by %s", key.id, session.who)
        return see_other(f"{KEYS}?done=key-revoked")

    return [
        Route(KEYS, listing, methods=["GET"]),
        Route(KEYS, create, methods=["POST"]),
        Route(f"{KEYS}/new", new, methods=["GET"]),
        Route(f"{KEYS}/{{key_id}}", detail, methods=["GET"]),
        Route(f"{KEYS}/{{key_id}}", update, methods=["POST"]),
        Route(f"{KEYS}/{{key_id}}/revoke", confirm_revoke, methods=["GET"]),
        Route(f"{KEYS}/{{key_id}}/revoke", revoke, methods=["POST"]),
    ]


def _form_page(
    ctx: Context, request: Request, session: Session, fields: dict[str, str], project: str, error: str = ""
) -> Response:
    return ctx.page(
        request,
        "key_new.html",
        session,
        400 if error else 200,
        section="keys",
        fields=fields,
        project=project,
        projects=ctx.project_names(session),
        error=error,
    )


def _detail_page(
    ctx: Context, request: Request, session: Session, key: KeyRecord, fields: dict[str, str], error: str = ""
) -> Response:
    view = present.key_view(key, ctx.wall_clock())
    return ctx.page(
        request, "key.html", session, 400 if error else 200, section="keys", key=view, fields=fields, error=error
    )


async def _activity(
    limiter: Limiter, keys: list[KeyRecord], last_used: dict[str, float], spend: dict[str, tuple[Totals, Totals]]
) -> tuple[dict[str, present.KeyActivity], bool]:
    """Each key's last use and spend (from the ledger's rollups, for every key), and for a live
    key with limits, its headroom as the limiter counts it: what its caps are enforced by. False:
    the limiter could not be reached, and no key shows headroom."""
    limited = [key for key in keys if key.active and key.limits != Limits()]

    async def ask(key: KeyRecord) -> list[Remaining]:
        return await limiter.headroom(Scope("key", key.id, key.limits))

    try:
        answers = dict(zip([k.id for k in limited], await asyncio.gather(*map(ask, limited)), strict=True))
    except LimiterUnavailable:
        answers, reachable = {}, False
    else:
        reachable = True
    activity = {}
    nothing = (Totals(), Totals())
    for key in keys:
        today, month = spend.get(key.id, nothing)
        headroom = None
        if key.limits != Limits():
            headroom = present.headroom_lines(key.limits, answers.get(key.id))
        activity[key.id] = present.KeyActivity(
            present.when(last_used.get(key.id)), present.spend(today), present.spend(month), headroom
        )
    return activity, reachable
