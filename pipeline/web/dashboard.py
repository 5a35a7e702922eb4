"""The dashboard at `/`: server-rendered HTML (no front-end build), with a small inline script
that refreshes fragments and tails build logs. Builds come from the build store; promotions,
pools (rollout, verification) and base drift from the promotion store and the env/<environment>
branches of the configured repository (a mirror of its own under LAYERING_WORKDIR, fetched at
most every few seconds). Does network I/O (Redis, Git) through adapters.

Everything shown is escaped: build logs, image names, commit messages and errors are hostile
input. The pages carry a Content-Security-Policy allowing only their own nonce'd script.
"""

from __future__ import annotations

import html
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import Response

from pipeline.adapters import git as gitadapter
from pipeline.adapters.promotion_store import PromotionStore
from pipeline.core import builds, repo
from pipeline.core.errors import PipelineError
from pipeline.core.settings import Settings
from pipeline.flows import promote as promote_flow

log = logging.getLogger(__name__)

FETCH_INTERVAL_SECONDS = 5.0
LOG_TAIL_LIMIT = 2000
BUILD_ROWS = 50


class BuildSource(Protocol):
    """What the dashboard reads of builds (pipeline.web.server.StoreView provides it)."""

    def list_builds(self, *, limit: int) -> list[Mapping[str, Any]]: ...

    def get_build(self, build_id: str) -> Mapping[str, Any] | None: ...

    def read_log(self, build_id: str) -> str | None: ...


@dataclass(frozen=True)
class PoolRow:
    cluster: str
    pool: str
    image: str
    digest: str
    verification: str
    rollout: str
    base: str


@dataclass(frozen=True)
class EnvironmentView:
    environment: str
    branch: str
    head: str  # "" when the branch does not exist yet
    pools: tuple[PoolRow, ...]


@dataclass(frozen=True)
class DriftRow:
    cluster: str
    expected: str
    actual: str
    release_version: str
    state: str  # "matches" | "drift" | "unknown: …"
    checked_at: float


@dataclass(frozen=True)
class PromotionsView:
    environments: tuple[EnvironmentView, ...] = ()
    drift: tuple[DriftRow, ...] = ()
    problem: str = ""  # why nothing could be read


class PromotionSource(Protocol):
    def view(self) -> PromotionsView: ...


# -- rendering (pure) -----------------------------------------------------------------------


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def short_sha(sha: object) -> str:
    return str(sha or "")[:12]


def short_digest(digest: object) -> str:
    text = str(digest or "")
    return text[:19] if text.startswith("sha256:") else text


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


def build_href(build_id: object) -> str:
    return "/builds/" + quote(str(build_id), safe="")


def builds_table(rows: Sequence[Mapping[str, Any]], *, now: float) -> str:
    if not rows:
        return '<p class="empty" id="no-builds">No builds yet. Push a change to images/.</p>'
    body = []
    for build in rows:
        state = str(build.get("state", ""))
        build_id = build.get("id", "")
        error = build.get("error") or ""
        body.append(
            f'<tr class="build" data-build-id="{e(build_id)}">'
            f'<td><span class="state state-{e(state)}">{e(state)}</span></td>'
            f'<td><a href="{e(build_href(build_id))}">{e(build.get("image"))}</a></td>'
            f"<td>{e(build.get('cluster'))}</td>"
            f'<td><code title="{e(build.get("commit_sha"))}">'
            f"{e(short_sha(build.get('commit_sha')))}</code></td>"
            f"<td>{e(duration(build, now))}</td>"
            f'<td><code title="{e(build.get("digest"))}">'
            f"{e(short_digest(build.get('digest')) or '-')}</code></td>"
            f'<td class="error">{e(error)}</td>'
            "</tr>"
        )
    return (
        '<table id="builds"><thead><tr><th>state</th><th>image</th><th>cluster</th>'
        "<th>commit</th><th>duration</th><th>digest</th><th>error</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def promotions_html(view: PromotionsView) -> str:
    parts: list[str] = []
    if view.problem:
        parts.append(f'<p class="problem">{e(view.problem)}</p>')
    for environment in view.environments:
        head = (
            f"at <code>{e(short_sha(environment.head))}</code>"
            if environment.head
            else "branch not created yet"
        )
        parts.append(
            f'<section class="environment" data-environment="{e(environment.environment)}">'
            f"<h3>{e(environment.environment)} <small>{e(environment.branch)} {head}</small></h3>"
        )
        if not environment.pools:
            parts.append('<p class="empty">No pools.</p></section>')
            continue
        rows = "".join(
            f'<tr class="pool"><td>{e(row.cluster)}</td><td>{e(row.pool)}</td>'
            f"<td>{e(row.image)}</td>"
            f'<td><code title="{e(row.digest)}">{e(short_digest(row.digest))}</code></td>'
            f"<td>{e(row.verification)}</td><td>{e(row.rollout)}</td><td>{e(row.base)}</td></tr>"
            for row in environment.pools
        )
        parts.append(
            "<table><thead><tr><th>cluster</th><th>pool</th><th>image</th><th>promoted</th>"
            "<th>verification</th><th>rollout</th><th>base</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>"
        )
    if not view.environments and not view.problem:
        parts.append('<p class="empty">No environments.</p>')
    return "".join(parts)


def drift_html(view: PromotionsView) -> str:
    if not view.drift:
        return (
            '<p class="empty">No drift checks yet (clusters with <code>kube:</code> are '
            "checked by beat).</p>"
        )
    rows = "".join(
        f'<tr><td>{e(row.cluster)}</td><td><span class="state state-{e(row.state.split(":")[0])}">'
        f"{e(row.state)}</span></td><td><code>{e(row.expected)}</code></td>"
        f"<td><code>{e(row.actual)}</code></td><td>{e(row.release_version)}</td></tr>"
        for row in view.drift
    )
    return (
        "<table><thead><tr><th>cluster</th><th>state</th><th>cluster.yaml baseImage</th>"
        "<th>cluster runs</th><th>release</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:10px 24px}header h1{font-size:18px;margin:0}
header a{color:#9cc3ff}main{padding:8px 24px 32px}h2{font-size:16px;margin:22px 0 8px}
h3{font-size:14px;margin:14px 0 6px}small{color:#667;font-weight:normal}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#eef0f3;font-weight:600}code{font:12px ui-monospace,monospace}
td.error{color:#a11;max-width:28em;overflow-wrap:anywhere}.empty,.problem{color:#667}
.state{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;background:#dde}
.state-succeeded,.state-matches{background:#cfe9d4}.state-failed,.state-drift{background:#f6c9c9}
.state-running{background:#ffe8a8}.state-queued{background:#dfe6f6}.state-skipped{background:#e4e4e4}
pre#log{background:#0f131a;color:#dfe6ee;padding:12px;min-height:8em;max-height:70vh;
overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere;font:12px/1.4 ui-monospace,monospace}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px}dt{color:#667}dd{margin:0}
"""


def page(title: str, body: str, *, nonce: str, script: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>"
        '<header><h1><a href="/">coreos-layering-pipeline</a></h1></header>'
        f'<main>{body}</main><script nonce="{e(nonce)}">{script}</script></body></html>'
    )


_INDEX_SCRIPT = """
async function refresh(id, url) {
  try {
    const response = await fetch(url, {cache: "no-store"});
    if (response.ok) document.getElementById(id).innerHTML = await response.text();
  } catch (error) { /* the next poll tries again */ }
}
setInterval(() => refresh("builds-section", "/dashboard/fragments/builds"), 2000);
setInterval(() => refresh("promotions-section", "/dashboard/fragments/promotions"), 5000);
"""

_LOG_SCRIPT = """
const log = document.getElementById("log");
const stateBadge = document.getElementById("state");
const durationCell = document.getElementById("duration");
const digestCell = document.getElementById("digest");
let offset = Number(log.dataset.offset);
async function tail() {
  let done = false;
  try {
    const response = await fetch(log.dataset.tail + "?offset=" + offset, {cache: "no-store"});
    if (response.ok) {
      const chunk = await response.json();
      if (chunk.lines.length) {
        const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.appendChild(document.createTextNode(chunk.lines.join("")));
        if (stick) log.scrollTop = log.scrollHeight;
      }
      offset = chunk.next_offset;
      stateBadge.textContent = chunk.state;
      stateBadge.className = "state state-" + chunk.state;
      durationCell.textContent = chunk.duration;
      digestCell.textContent = chunk.digest || "-";
      done = chunk.terminal && chunk.lines.length === 0;
    }
  } catch (error) { /* try again */ }
  if (!done) setTimeout(tail, 1000);
}
tail();
"""


def index_page(
    builds_rows: Sequence[Mapping[str, Any]] | None, view: PromotionsView, *, now: float, nonce: str
) -> str:
    builds_part = (
        '<p class="problem">Build store not configured.</p>'
        if builds_rows is None
        else builds_table(builds_rows, now=now)
    )
    body = (
        f'<h2>Builds</h2><div id="builds-section">{builds_part}</div>'
        '<div id="promotions-section">'
        f"{promotions_fragment(view)}</div>"
    )
    return page("layering: dashboard", body, nonce=nonce, script=_INDEX_SCRIPT)


def promotions_fragment(view: PromotionsView) -> str:
    return (
        "<h2>Promotions and pools</h2>"
        f'<div id="promotions">{promotions_html(view)}</div>'
        f'<h2>Base drift</h2><div id="drift">{drift_html(view)}</div>'
    )


def build_page(build: Mapping[str, Any], lines: Sequence[str], *, now: float, nonce: str) -> str:
    build_id = str(build.get("id", ""))
    state = str(build.get("state", ""))
    fields = [
        ("image", e(build.get("image"))),
        ("cluster", e(build.get("cluster"))),
        ("commit", f"<code>{e(build.get('commit_sha'))}</code>"),
        ("target", f"<code>{e(build.get('target') or '-')}</code>"),
        ("digest", f'<code id="digest">{e(build.get("digest") or "-")}</code>'),
        ("duration", f'<span id="duration">{e(duration(build, now))}</span>'),
        ("build key", f"<code>{e(build.get('build_key') or '-')}</code>"),
    ]
    if build.get("error"):
        fields.append(("error", f'<span class="error">{e(build.get("error"))}</span>'))
    if build.get("failing_step"):
        where = f" (line {e(build.get('failing_line'))})" if build.get("failing_line") else ""
        fields.append(("failing step", f"{e(build.get('failing_step'))}{where}"))
    details = "".join(f"<dt>{e(name)}</dt><dd>{value}</dd>" for name, value in fields)
    tail_url = f"/api/builds/{quote(build_id, safe='')}/log/tail"
    body = (
        f'<h2>Build {e(build_id)} <span id="state" class="state state-{e(state)}">{e(state)}'
        f"</span></h2><dl>{details}</dl><h2>Log</h2>"
        f'<pre id="log" data-offset="{len(lines)}" data-tail="{e(tail_url)}">'
        f"{e(''.join(lines))}</pre>"
    )
    return page(f"layering: build {build_id}", body, nonce=nonce, script=_LOG_SCRIPT)


def log_lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


# -- data -----------------------------------------------------------------------------------


class RepositoryPromotions:
    """PromotionsView from the configured repository's env branches and the promotion store."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        fetch_interval: float = FETCH_INTERVAL_SECONDS,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._fetch_interval = fetch_interval
        self._lock = threading.Lock()
        self._fetched_at = float("-inf")
        self._store = PromotionStore.from_url(settings.redis_url.get_secret_value())

    def view(self) -> PromotionsView:
        store = self._store
        try:
            drift = _drift_rows(store)
        except PipelineError as exc:
            return PromotionsView(problem=str(exc))
        if not self._settings.repo_url:
            return PromotionsView(drift=drift, problem="LAYERING_REPO_URL is not set")
        try:
            environments = self._environments(store)
        except PipelineError as exc:
            return PromotionsView(drift=drift, problem=str(exc))
        return PromotionsView(environments=environments, drift=drift)

    def _environments(self, store: PromotionStore) -> tuple[EnvironmentView, ...]:
        assert self._settings.repo_url is not None
        path = self._settings.workdir / "dashboard" / "mirror.git"
        with self._lock:
            mirror = gitadapter.GitRepo.ensure_mirror(path, self._settings.repo_url)
            try:
                if time.monotonic() - self._fetched_at >= self._fetch_interval:
                    mirror.fetch()
                    self._fetched_at = time.monotonic()
                return self._read(mirror, store)
            finally:
                mirror.close()

    def _read(
        self, mirror: gitadapter.GitRepo, store: PromotionStore
    ) -> tuple[EnvironmentView, ...]:
        default = gitadapter.branch_commit(mirror, self._settings.default_branch)
        if default is None:
            return ()
        model = mirror.load(default)
        views: list[EnvironmentView] = []
        for environment in environment_order(model):
            branch = f"env/{environment}"
            head = gitadapter.branch_commit(mirror, branch)
            at_head = mirror.load(head) if head else model
            rows = promote_flow.status_rows(at_head, store, now=self._clock())
            pools = tuple(
                PoolRow(
                    cluster=row["cluster"],
                    pool=row["pool"],
                    image=row["image"],
                    digest=row["digest"],
                    verification=row["verification"],
                    rollout=row["rollout"],
                    base=row["base"],
                )
                for row in rows
                if row["environment"] == environment
            )
            views.append(EnvironmentView(environment, branch, head or "", pools))
        return tuple(views)


def environment_order(model: repo.Repository) -> list[str]:
    """Environments upstream first (nonprod before prod), then by name."""

    def depth(environment: str) -> int:
        deepest = 0
        for cluster in model.clusters_in(environment):
            steps, seen = 0, set[str]()
            current: repo.Cluster | None = cluster
            while current is not None and current.promotes_from and current.name not in seen:
                seen.add(current.name)
                current = model.clusters.get(current.promotes_from)
                steps += 1
            deepest = max(deepest, steps)
        return deepest

    return sorted(model.environments(), key=lambda name: (depth(name), name))


def _drift_rows(store: PromotionStore) -> tuple[DriftRow, ...]:
    rows = []
    for cluster, drift in sorted(store.drift().items()):
        if drift.error:
            state = f"unknown: {drift.error}"
        else:
            state = "drift" if drift.drifted else "matches"
        rows.append(
            DriftRow(
                cluster,
                drift.expected,
                drift.actual,
                drift.release_version,
                state,
                drift.checked_at,
            )
        )
    return tuple(rows)


# -- routes ---------------------------------------------------------------------------------


def _html(text: str, *, nonce: str | None = None, status: int = 200) -> Response:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    policy = (
        f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
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
        },
    )


def _json(status: int, document: Mapping[str, Any]) -> Response:
    return Response(
        json.dumps(document, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def router(
    settings: Settings,
    store: BuildSource | None,
    *,
    promotions: PromotionSource | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The dashboard's routes: `/`, `/builds/{id}`, the fragments the pages poll, and
    `/api/builds/{id}/log/tail?offset=N` (JSON lines from N, for a live tail)."""
    source: PromotionSource = promotions or RepositoryPromotions(settings, clock=clock)
    routes = APIRouter()

    def recent() -> list[Mapping[str, Any]] | None:
        return None if store is None else store.list_builds(limit=BUILD_ROWS)

    def promotions_view() -> PromotionsView:
        try:
            return source.view()
        except PipelineError as exc:
            return PromotionsView(problem=str(exc))

    @routes.get("/")
    def index() -> Response:
        nonce = secrets.token_urlsafe(16)
        return _html(index_page(recent(), promotions_view(), now=clock(), nonce=nonce), nonce=nonce)

    @routes.get("/dashboard/fragments/builds")
    def builds_fragment() -> Response:
        rows = recent()
        if rows is None:
            return _html('<p class="problem">Build store not configured.</p>')
        return _html(builds_table(rows, now=clock()))

    @routes.get("/dashboard/fragments/promotions")
    def promotions_part() -> Response:
        return _html(promotions_fragment(promotions_view()))

    @routes.get("/builds/{build_id}")
    def build_detail(build_id: str) -> Response:
        build = _build(store, build_id)
        if build is None:
            return _html(f"<p>No build {e(build_id)}.</p>", status=404)
        nonce = secrets.token_urlsafe(16)
        lines = log_lines(store.read_log(build_id) or "") if store is not None else []
        return _html(build_page(build, lines, now=clock(), nonce=nonce), nonce=nonce)

    @routes.get("/api/builds/{build_id}/log/tail")
    def log_tail(build_id: str, offset: int = 0) -> Response:
        build = _build(store, build_id)
        if build is None or store is None:
            return _json(404, {"error": f"no build {build_id!r}"})
        lines = log_lines(store.read_log(build_id) or "")
        start = max(0, offset)
        chunk = lines[start : start + LOG_TAIL_LIMIT]
        state = str(build.get("state", ""))
        terminal = state in {s.value for s in builds.TERMINAL_STATES}
        return _json(
            200,
            {
                "lines": chunk,
                "next_offset": start + len(chunk),
                "state": state,
                "terminal": terminal,
                "duration": duration(build, clock()),
                "digest": build.get("digest") or "",
            },
        )

    return routes


def _build(store: BuildSource | None, build_id: str) -> Mapping[str, Any] | None:
    if store is None or not builds.is_build_id(build_id):
        return None
    return store.get_build(build_id)
