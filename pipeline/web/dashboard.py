"""The dashboard's builds, promotions and drift (`/builds`) and build pages (`/builds/{id}`);
`/` is the pipeline view (pipeline_page.py). Server-rendered HTML from the Jinja2 templates in
templates/ (no front-end build), with a small inline script that refreshes fragments and tails
build logs.
Builds come from a BuildSource, promotions and drift from a PromotionSource; both are built
once per process by the app's factory and passed in. Does I/O only through them.

Everything shown is escaped (the templates are rendered with autoescape on): build logs, image
names, commit messages and errors are hostile input. Each page carries a Content-Security-Policy
allowing only its own script, marked with a fresh nonce per page.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jinja2
import markupsafe
from fastapi import APIRouter
from fastapi.responses import Response

from pipeline.core import builds, duration_chart, image_changes
from pipeline.core.errors import PipelineError
from pipeline.web import build_source, promotions

LOG_TAIL_LIMIT = 2000
BUILD_ROWS = 50
# the build page shows the first lines of the log (a bounded range, like every read); its
# script then asks only for what follows, at once while a chunk comes back full
PAGE_LOG_LINES = LOG_TAIL_LIMIT
# the image's newest builds read for the build page's duration chart: its last
# duration_chart.MAX_BUILDS finished ones are among them unless most were skipped or cancelled
CHART_RECORDS = 3 * duration_chart.MAX_BUILDS


def short_sha(sha: str) -> str:
    return sha[:12]


def short_digest(digest: str) -> str:
    return digest[:19] if digest.startswith("sha256:") else digest


TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("pipeline.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters["short_sha"] = short_sha
TEMPLATES.filters["short_digest"] = short_digest
TEMPLATES.filters["build_href"] = lambda build_id: build_href(str(build_id))
TEMPLATES.globals["changes_headline"] = image_changes.headline
TEMPLATES.globals["package_lists"] = image_changes.package_lists
TEMPLATES.globals["path_lists"] = image_changes.path_lists


def _text(value: object) -> str:
    return "" if value is None else str(value)


def duration(build: Mapping[str, Any], now: float) -> str:
    started = build.get("started_at")
    if not isinstance(started, int | float):
        return "-"
    finished = build.get("finished_at")
    end = finished if isinstance(finished, int | float) else now
    seconds = max(0.0, float(end) - float(started))
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def build_href(build_id: str) -> str:
    return "/builds/" + quote(build_id, safe="")


@dataclass(frozen=True)
class BuildView:
    """One build record as the pages show it; every field is text."""

    build_id: str
    href: str
    state: str
    image: str
    cluster: str
    commit_sha: str
    target: str
    digest: str
    build_key: str
    duration: str
    error: str
    failing_step: str
    failing_line: str

    @classmethod
    def of(cls, build: Mapping[str, Any], *, now: float) -> BuildView:
        build_id = _text(build.get("id"))
        return cls(
            build_id=build_id,
            href=build_href(build_id),
            state=_text(build.get("state")),
            image=_text(build.get("image")),
            cluster=_text(build.get("cluster")),
            commit_sha=_text(build.get("commit_sha")),
            target=_text(build.get("target")),
            digest=_text(build.get("digest")),
            build_key=_text(build.get("build_key")),
            duration=duration(build, now),
            error=_text(build.get("error") or ""),
            failing_step=_text(build.get("failing_step") or ""),
            failing_line=_text(build.get("failing_line") or ""),
        )


def changes_of(build: Mapping[str, Any]) -> tuple[image_changes.ImageChanges | None, str]:
    """The build's image changes as the page shows them, or why there are none."""
    stored = build.get("changes")
    if stored is None:
        state = build.get("state")
        if state == builds.BuildState.SUCCEEDED.value:
            return None, "Not analysed yet."
        if state == builds.BuildState.SKIPPED.value:
            return None, "Not analysed: the image was already in the registry, not built here."
        return None, "Not analysed: the build has not produced an image."
    try:
        return image_changes.ImageChanges.from_json(stored), ""
    except image_changes.InvalidChanges as exc:
        return None, f"The stored changes are unreadable: {exc}"


# -- responses ------------------------------------------------------------------------------


def html_response(
    text: str,
    *,
    nonce: str | None = None,
    status: int = 200,
    form_action: str = "'none'",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """HTML with a policy that runs no script but the one carrying `nonce` (none without) and
    submits forms only to `form_action` (the login page: 'self')."""
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    policy = (
        f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; "
        f"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action {form_action}; "
        "frame-ancestors 'none'"
    )
    return Response(
        text,
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            **(headers or {}),
        },
    )


def _json(status: int, document: Mapping[str, Any]) -> Response:
    return Response(
        json.dumps(document, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def render(template: str, **context: Any) -> str:
    return TEMPLATES.get_template(template).render(**context)


def render_block(template: str, block: str, **context: Any) -> str:
    """One block of a page, exactly as the page renders it: what the page's script swaps in."""
    page = TEMPLATES.get_template(template)
    return "".join(page.blocks[block](page.new_context(context)))


def _page(template: str, **context: Any) -> Response:
    """A full page with its own script: a fresh nonce each time."""
    nonce = secrets.token_urlsafe(16)
    return html_response(render(template, nonce=nonce, **context), nonce=nonce)


# -- routes ---------------------------------------------------------------------------------

_NO_PROMOTIONS = promotions.PromotionsView(problem="Promotions are not configured.")


def router(
    store: build_source.BuildSource | None,
    *,
    promotion_source: promotions.PromotionSource | None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The dashboard's routes: `/builds`, `/builds/{id}`, the fragments the pages poll, and
    `/api/builds/{id}/log/tail?offset=N` (JSON: at most LOG_TAIL_LIMIT lines from N on, for a
    live tail; `more` when the answer was cut short; with `&findings=K`, the build page's
    findings block as HTML when the build holds other than K content findings)."""
    routes = APIRouter()

    def recent() -> list[BuildView] | None:
        if store is None:
            return None
        now = clock()
        return [BuildView.of(build, now=now) for build in store.list_builds(limit=BUILD_ROWS)]

    def promotions_view() -> promotions.PromotionsView:
        if promotion_source is None:
            return _NO_PROMOTIONS
        try:
            return promotion_source.view()
        except PipelineError as exc:
            return promotions.PromotionsView(problem=str(exc))

    def find(build_id: str) -> Mapping[str, Any] | None:
        if store is None or not builds.is_build_id(build_id):
            return None
        return store.get_build(build_id)

    def findings_of(
        source: build_source.BuildSource, view: BuildView, build: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The build page's `findings` block: the commit's lint of the image (None when no
        head linted it) and the built image's content findings."""
        lint = source.lint_findings(view.commit_sha, view.image) if view.commit_sha else None
        content = build_source.content_findings(build)
        return {
            "build": view,
            "lint": lint,
            "findings": build_source.finding_rows(lint, content),
            "content_count": len(content),
        }

    # `/` is the pipeline view (pipeline_page.py), which links here
    @routes.get("/builds")
    def index() -> Response:
        return _page(
            "index.html.j2",
            title="layering: builds",
            builds=recent(),
            view=promotions_view(),
        )

    @routes.get("/dashboard/fragments/builds")
    def builds_fragment() -> Response:
        return html_response(render("builds.html.j2", builds=recent()))

    @routes.get("/dashboard/fragments/promotions")
    def promotions_fragment() -> Response:
        return html_response(render("promotions.html.j2", view=promotions_view()))

    @routes.get("/builds/{build_id}")
    def build_page(build_id: str) -> Response:
        build = find(build_id)
        if build is None or store is None:
            return html_response(render("missing_build.html.j2", build_id=build_id), status=404)
        view = BuildView.of(build, now=clock())
        changes, changes_note = changes_of(build)
        recent_builds = store.image_builds(view.image, limit=CHART_RECORDS)
        chart = duration_chart.chart(recent_builds, current=build)
        return _page(
            "build.html.j2",
            title=f"layering: build {view.build_id}",
            changes=changes,
            changes_note=changes_note,
            **findings_of(store, view, build),
            chart=chart,
            # built by duration_chart with every text in it escaped
            chart_svg=markupsafe.Markup(chart.svg) if chart is not None else None,  # noqa: S704
            lines=build_source.log_range(store, build_id, offset=0, limit=PAGE_LOG_LINES)[0],
            tail_url=f"/api/builds/{quote(view.build_id, safe='')}/log/tail",
        )

    @routes.get("/api/builds/{build_id}/log/tail")
    def log_tail(
        build_id: str, offset: int = 0, limit: int = LOG_TAIL_LIMIT, findings: int | None = None
    ) -> Response:
        problem = build_source.range_problem(offset, limit)
        if problem is not None:
            return _json(400, {"error": problem})
        build = find(build_id)
        if build is None or store is None:
            return _json(404, {"error": f"no build {build_id!r}"})
        # only the lines the page has not shown yet: never the whole log again
        lines, more = build_source.log_range(
            store, build_id, offset=offset, limit=min(limit, LOG_TAIL_LIMIT)
        )
        state = str(build.get("state", ""))
        now = clock()
        # the findings block again only when the page shows another number of content findings
        # (they arrive once, when the content stage ends): not re-sent on every poll
        shown = None
        if findings is not None and findings != len(build_source.content_findings(build)):
            context = findings_of(store, BuildView.of(build, now=now), build)
            html = render_block("build.html.j2", "findings", **context)
            shown = {"count": context["content_count"], "html": html}
        return _json(
            200,
            {
                "lines": lines,
                "next_offset": offset + len(lines),
                "more": more,
                "state": state,
                "terminal": state in _TERMINAL,
                "duration": duration(build, now),
                "digest": build.get("digest") or "",
                "findings": shown,
            },
        )

    return routes


_TERMINAL = frozenset(state.value for state in builds.TERMINAL_STATES)
