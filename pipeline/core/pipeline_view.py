"""The pipeline view, the dashboard's home page as data: one row per image, one cell per
environment in `promotesFrom` order (what is promoted there, how far it is verified, the soak of
the next candidate, the gate and promotion pull request, what the promotion waits for, whether
it differs upstream); beside it the builds of the current heads by commit with their lint state.
Whatever is missing reads as "unknown" or "not promoted", never as an error. No I/O.

    view = pipeline_view.build(inputs, now=time.time())
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core import (
    builds,
    gate,
    head,
    head_lint,
    pipeline_gate,
    pipeline_heads,
    pool_status,
    post_push,
    promotion,
    reconcile,
    repo,
    rollout,
    verification,
)

MAX_IMAGES = 300


@dataclass(frozen=True)
class Inputs:
    """What the page read. `repository`: the default branch's head (None: unreadable);
    `branches`: what each env/<environment> head sets (an environment left out: no branch)."""

    repository: repo.Repository | None
    # environment -> (cluster, pool) -> the osImageURL env/<environment> sets (`branch_images`)
    branches: Mapping[str, Mapping[tuple[str, str], str]] = field(default_factory=dict)
    records: pool_status.PoolRecords = field(default_factory=pool_status.PoolRecords)
    waits: Sequence[reconcile.EnvironmentWait] = ()
    gates: Sequence[gate.WatchedGate] = ()
    gate_passes: Sequence[gate.WatchedGate] = ()  # the last passing verdicts (not watched)
    post_pushes: Sequence[post_push.PostPush] = ()
    heads: Mapping[str, head.Head] = field(default_factory=dict)
    builds: Mapping[str, builds.BuildRecord] = field(default_factory=dict)  # id ->
    # (commit, image) -> the head's lint findings of that image (adapters/head_store)
    lint: Mapping[tuple[str, str], head_lint.Stored] = field(default_factory=dict)
    pull_url: str = ""  # "https://github.com/<owner>/<name>/pull/": PR numbers become links
    problems: tuple[str, ...] = ()  # what could not be read, one line each
    notes: tuple[str, ...] = ()  # what was cut short while reading
    records_read: bool = True  # False: the verifications and rollouts could not be read


@dataclass(frozen=True)
class Soak:
    digest: str
    upstream: str
    fraction: float  # 0..1 of the soak served
    text: str


@dataclass(frozen=True)
class Cell:
    image: str
    environment: str
    state: str  # "promoted" | "not promoted" | "mixed" | "not used"
    digest: str = ""
    build_key: str = ""
    commit_sha: str = ""
    pools: tuple[str, ...] = ()  # "cluster/pool"
    verification: str = "unknown"
    verification_state: str = "unknown"  # verified|time-based|rolling out|failed|not verified
    soak: Soak | None = None
    gate: str = ""
    pull_request: int | None = None
    pull_request_url: str = ""
    waiting: str = ""
    upstream: str = ""
    differs: str = ""  # "" when the same as upstream (or nothing to compare)

    @property
    def cell_id(self) -> str:
        return f"cell-{self.image}-{self.environment}"


@dataclass(frozen=True)
class ImageRow:
    image: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class PipelineView:
    environments: tuple[str, ...] = ()
    rows: tuple[ImageRow, ...] = ()
    commits: tuple[pipeline_heads.CommitGroup, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """/api/pipeline: every field, and each cell's element id (dataclasses.asdict would
        deep-copy every value: several times slower on a page of 600 cells)."""
        return {
            "environments": list(self.environments),
            "rows": [
                {"image": row.image, "cells": [_cell_json(cell) for cell in row.cells]}
                for row in self.rows
            ],
            "commits": pipeline_heads.to_json(self.commits),
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def _cell_json(cell: Cell) -> dict[str, Any]:
    document = {f.name: getattr(cell, f.name) for f in dataclasses.fields(cell)}
    document["pools"] = list(cell.pools)
    document["soak"] = dataclasses.asdict(cell.soak) if cell.soak is not None else None
    document["id"] = cell.cell_id
    return document


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


def branch_images(model: repo.Repository) -> dict[tuple[str, str], str]:
    """(cluster, pool) -> the osImageURL of its managed MachineConfig at an env branch's head.
    Parses every MachineConfig: the caller keeps the answer per commit."""
    return {
        (cluster, pool): url
        for cluster in model.clusters
        for pool, url in rollout.expected_images(model, cluster).items()
    }


def build(inputs: Inputs, *, now: float, max_images: int = MAX_IMAGES) -> PipelineView:
    commits = pipeline_heads.commits(inputs.heads, inputs.builds, inputs.lint)
    model = inputs.repository
    if model is None:
        return PipelineView(commits=commits, problems=inputs.problems, notes=inputs.notes)
    environments = tuple(environment_order(model))
    images = sorted({image for _, _, image in model.assignments()} | set(model.images))
    notes = inputs.notes
    if len(images) > max_images:
        notes += (f"showing {max_images} of {len(images)} images (the first by name)",)
        images = images[:max_images]
    digests = {env: _digests(model, inputs, env) for env in environments}
    index = _Index(model, digests, _awaited_keys(model, inputs))
    rows = tuple(
        ImageRow(image, tuple(_cell(index, inputs, image, env, now=now) for env in environments))
        for image in images
    )
    return PipelineView(
        environments, rows, commits, inputs.problems, notes + pipeline_heads.cut(inputs.heads)
    )


class _Index:
    """What every cell looks up, gathered once: the pools using each image per environment,
    the digests each cluster runs of each image, and the build keys waits name."""

    def __init__(
        self,
        model: repo.Repository,
        digests: Mapping[str, Mapping[tuple[str, str], str]],
        keys: Mapping[tuple[str, str], set[str]],
    ) -> None:
        self.keys = keys
        self.places: dict[tuple[str, str], list[tuple[repo.Cluster, str]]] = {}
        self.urls: dict[tuple[str, str], str] = {}
        self.running: dict[tuple[str, str], set[str]] = {}  # (cluster, image) -> digests
        for cluster, pool, image in model.assignments():
            url = digests.get(cluster.environment, {}).get((cluster.name, pool), "")
            self.places.setdefault((cluster.environment, image), []).append((cluster, pool))
            self.urls[(cluster.name, pool)] = url
            found = self.running.setdefault((cluster.name, image), set())
            if url:
                found.add(verification.digest_of(url))


# -- cells ----------------------------------------------------------------------------------

_VERIFICATION_RANK = ("verified", "time-based", "not verified", "unknown", "rolling out", "failed")


def _digests(
    model: repo.Repository, inputs: Inputs, environment: str
) -> dict[tuple[str, str], str]:
    """(cluster, pool) -> the promoted osImageURL in `environment` ("" when none)."""
    expected = inputs.branches.get(environment, {})
    found: dict[tuple[str, str], str] = {}
    for cluster in model.clusters_in(environment):
        promoted = inputs.records.promoted.get(cluster.name, {})
        for pool in cluster.pools:
            record = promoted.get(pool)
            found[(cluster.name, pool)] = expected.get((cluster.name, pool)) or (
                record.os_image_url if record is not None else ""
            )
    return found


def _cell(index: _Index, inputs: Inputs, image: str, environment: str, *, now: float) -> Cell:
    places = index.places.get((environment, image), [])
    if not places:
        return Cell(image, environment, "not used", verification="", verification_state="")
    urls = {(c.name, p): index.urls[(c.name, p)] for c, p in places}
    found = {verification.digest_of(url) for url in urls.values()} - {""}
    digest = next(iter(found)) if len(found) == 1 else ""
    state = "mixed" if len(found) > 1 else "promoted" if found else "not promoted"
    if len(found) == 1 and "" in {verification.digest_of(url) for url in urls.values()}:
        state = "mixed"  # some pools have it, others nothing yet
    build_key = commit_sha = ""
    for cluster, pool in places:
        record = inputs.records.promoted.get(cluster.name, {}).get(pool)
        if record is not None and digest and record.digest == digest:
            build_key, commit_sha = record.build_key, record.commit_sha
            break
    checks = [
        _verification(inputs.records, c.name, p, urls[(c.name, p)], now)
        if inputs.records_read
        else ("unknown", "unknown: the verifications could not be read")
        for c, p in places
    ]
    worst = max(checks, key=lambda check: _VERIFICATION_RANK.index(check[0]))
    texts = sorted({text for _, text in checks})
    text = (
        texts[0]
        if len(texts) == 1
        else "; ".join(f"{c.name}/{p}: {t}" for (c, p), (_, t) in zip(places, checks, strict=True))
    )
    upstream, upstream_digests = _upstream(index, places, image)
    differs = ""
    if upstream and upstream_digests and upstream_digests != found:
        shown = ", ".join(_short(d) for d in sorted(upstream_digests))
        differs = f"differs from {upstream} ({shown})"
    candidate = next(iter(upstream_digests)) if len(upstream_digests) == 1 else ""
    soak = _soak(inputs.records, places, upstream, candidate, digest, now)
    pull_request, gate_text = pipeline_gate.shown(
        environment, watched=inputs.gates, passed=inputs.gate_passes, post_pushes=inputs.post_pushes
    )
    return Cell(
        image,
        environment,
        state,
        digest=digest,
        build_key=build_key,
        commit_sha=commit_sha,
        pools=tuple(f"{c.name}/{p}" for c, p in places),
        verification=text if state != "not promoted" else "nothing promoted yet",
        verification_state=worst[0] if state != "not promoted" else "not verified",
        soak=soak,
        gate=gate_text,
        pull_request=pull_request,
        pull_request_url=f"{inputs.pull_url}{pull_request}"
        if pull_request and inputs.pull_url
        else "",
        waiting=_waiting(
            inputs,
            environment,
            index.keys.get((environment, image), set()),
            places,
            now,
            timed=bool(differs),
        ),
        upstream=upstream,
        differs=differs,
    )


def _verification(
    records: pool_status.PoolRecords, cluster: str, pool: str, url: str, now: float
) -> tuple[str, str]:
    """(state, text) of one pool's promoted image."""
    digest = verification.digest_of(url)
    if not digest:
        return "not verified", "nothing promoted yet"
    seen = records.rollouts.get(cluster, {}).get(pool)
    counted = f"{seen.updated}/{seen.total}" if seen and seen.os_image_url == url else ""
    proven = records.verifications.get((cluster, digest))
    if proven is not None:
        age = _duration(max(0.0, now - proven.verified_at))
        if not proven.healthy:
            return "failed", f"failed {age} ago: {proven.message}"
        if proven.method is verification.VerificationMethod.TIME:
            return "time-based", f"time-based (no kube access): verified {age} ago"
        rolled = f"rolled out {counted}" if counted else "rolled out"
        return "verified", f"verified: {rolled}, {age} ago"
    if counted and seen is not None:
        if seen.phase == rollout.Phase.DEGRADED.value:
            return "failed", f"degraded {counted}: {seen.message}"
        return "rolling out", f"rolled out {counted}"
    return "not verified", "not verified yet"


def _upstream(
    index: _Index, places: Sequence[tuple[repo.Cluster, str]], image: str
) -> tuple[str, set[str]]:
    """The upstream cluster of these pools and the digests its pools of `image` run."""
    names = {cluster.promotes_from for cluster, _ in places} - {None}
    if len(names) != 1:
        return "", set()
    name = str(next(iter(names)))
    return name, index.running.get((name, image), set())


def _soak(
    records: pool_status.PoolRecords,
    places: Sequence[tuple[repo.Cluster, str]],
    upstream: str,
    candidate: str,
    digest: str,
    now: float,
) -> Soak | None:
    """The soak of the upstream's digest before it may come here (None: nothing to soak)."""
    soak_seconds = max((cluster.soak_seconds for cluster, _ in places), default=0)
    if not upstream or not candidate or candidate == digest or soak_seconds <= 0:
        return None
    proven = records.verifications.get((upstream, candidate))
    if proven is None or not proven.healthy:
        return Soak(candidate, upstream, 0.0, f"soak starts once verified on {upstream}")
    served = max(0.0, now - proven.verified_at)
    if served >= soak_seconds:
        return Soak(candidate, upstream, 1.0, f"soak over ({_duration(soak_seconds)})")
    left = _duration(soak_seconds - served)
    return Soak(
        candidate,
        upstream,
        served / soak_seconds,
        f"soaking {_short(candidate)} from {upstream}: {left} left of {_duration(soak_seconds)}",
    )


def _awaited_keys(model: repo.Repository, inputs: Inputs) -> dict[tuple[str, str], set[str]]:
    """(environment, image) -> its build keys there, for the environments waiting on builds
    (a build key is a hash over the image's tree: computed only where a wait needs it)."""
    found: dict[tuple[str, str], set[str]] = {}
    for environment in sorted({w.environment for w in inputs.waits if w.build_keys}):
        for target in promotion.targets(model, environment):
            found.setdefault((environment, target.image), set()).add(target.build_key)
    return found


def _waiting(
    inputs: Inputs,
    environment: str,
    keys: set[str],
    places: Sequence[tuple[repo.Cluster, str]],
    now: float,
    *,
    timed: bool,
) -> str:
    """What the environment's recorded wait holds for this image: its build, the upstream
    rollout, and (`timed`: the image differs upstream) the soak."""
    upstreams = {cluster.promotes_from for cluster, _ in places}
    found: list[str] = []
    for wait in inputs.waits:
        if wait.environment != environment:
            continue
        found += [f"the build {key[:12]}" for key in wait.build_keys if key in keys]
        found += [f"the rollout on {name}" for name in wait.upstreams if name in upstreams]
        if wait.due is not None and timed:
            found.append(f"the soak, due in {_duration(max(0.0, wait.due - now))}")
    return "waits for " + ", ".join(dict.fromkeys(found)) if found else ""


def _duration(seconds: float) -> str:
    """Whole minutes past two (a page read at a glance, polled every few seconds)."""
    return promotion.format_duration(round(seconds / 60) * 60 if seconds >= 120 else seconds)


def _short(digest: str) -> str:
    return digest[:19] if digest.startswith("sha256:") else digest[:12]
