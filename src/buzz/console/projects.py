"""Projects, for the operator only: limits, the prepaid flag, and top-ups of the balance.

A member's session gets a 404 here, as for anything else outside its project. Balances are read
and changed through the limiter, as the admin API does: it holds the live figure.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from buzz.changes import BalanceChange, InvalidChange, NewProject, ProjectChanges, convert
from buzz.console import forms, present
from buzz.console.context import PREFIX, Context, NotFound, see_other
from buzz.console.sessions import Session
from buzz.store.base import ProjectRecord

log = logging.getLogger("buzz.console")
PROJECTS = f"{PREFIX}/projects"


def routes(ctx: Context) -> list[Route]:
    def operator(request: Request) -> Session:
        session = ctx.session(request)
        if not session.operator:
            raise NotFound
        return session

    def project_for(name: str) -> ProjectRecord:
        project = ctx.store.project(name)
        if project is None:
            raise NotFound
        return project

    async def listing_page(
        request: Request, session: Session, fields: dict[str, str] | None = None, error: str = ""
    ) -> Response:
        views = [
            present.project_view(project, await ctx.limiter.balance(project.name))
            for project in ctx.store.list_projects()
        ]
        empty = {"name": "", **{name: "" for name in forms.LIMIT_FIELDS}}
        return ctx.page(
            request,
            "projects.html",
            session,
            400 if error else 200,
            section="projects",
            projects=views,
            fields=fields or empty,
            error=error,
        )

    async def detail_page(
        request: Request,
        session: Session,
        project: ProjectRecord,
        fields: dict[str, str] | None = None,
        error: str = "",
        balance_error: str = "",
    ) -> Response:
        view = present.project_view(project, await ctx.limiter.balance(project.name))
        shown = fields or {**present.limit_fields(project.limits), **({"prepaid": "on"} if project.prepaid else {})}
        return ctx.page(
            request,
            "project.html",
            session,
            400 if error or balance_error else 200,
            section="projects",
            project=view,
            fields=shown,
            error=error,
            balance_error=balance_error,
            keys=len(ctx.store.list_keys(project.name)),
            tokens=sum(token.revoked_at is None for token in ctx.store.list_console_tokens(project.name)),
        )

    async def listing(request: Request) -> Response:
        return await listing_page(request, operator(request))

    async def create(request: Request) -> Response:
        session = operator(request)
        form = await ctx.form(request, session)
        try:
            made = convert({"name": form.get("name", "").strip(), **forms.limit_values(form)}, NewProject)
        except InvalidChange as exc:
            return await listing_page(request, session, form, str(exc))
        columns = made.columns()
        columns["prepaid"] = int(forms.checked(form, "prepaid"))
        try:
            ctx.store.save_project(made.name, columns, create=True)
        except ValueError as exc:  # it exists already
            return await listing_page(request, session, form, str(exc))
        ctx.changed()
        log.info("console: project %s created by the operator", made.name)
        return see_other(f"{PROJECTS}/{made.name}?done=project-created")

    async def detail(request: Request) -> Response:
        session = operator(request)
        return await detail_page(request, session, project_for(request.path_params["name"]))

    async def update(request: Request) -> Response:
        session = operator(request)
        form = await ctx.form(request, session)
        project = project_for(request.path_params["name"])
        try:
            changes = convert({**forms.limit_values(form), "prepaid": forms.checked(form, "prepaid")}, ProjectChanges)
        except InvalidChange as exc:
            return await detail_page(request, session, project, form, str(exc))
        ctx.store.save_project(project.name, changes.columns(), create=False)
        ctx.changed()
        log.info("console: project %s changed by the operator", project.name)
        return see_other(f"{PROJECTS}/{project.name}?done=project-saved")

    async def top_up(request: Request) -> Response:
        session = operator(request)
        form = await ctx.form(request, session)
        project = project_for(request.path_params["name"])
        try:
            nanos = convert({"usd": form.get("usd", "").strip() or None}, BalanceChange).nanos
        except InvalidChange as exc:
            return await detail_page(request, session, project, balance_error=str(exc))
        balance = await ctx.limiter.add_balance(project.name, nanos)
        ctx.changed()
        log.info("console: balance of project %s changed by the operator, now %s", project.name, present.usd(balance))
        return see_other(f"{PROJECTS}/{project.name}?done=balance-added")

    return [
        Route(PROJECTS, listing, methods=["GET"]),
        Route(PROJECTS, create, methods=["POST"]),
        Route(f"{PROJECTS}/{{name}}", detail, methods=["GET"]),
        Route(f"{PROJECTS}/{{name}}", update, methods=["POST"]),
        Route(f"{PROJECTS}/{{name}}/balance", top_up, methods=["POST"]),
    ]
