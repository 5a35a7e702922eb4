"""Builds as data: the request for one (image, cluster) build, its inputs (Checkout) and spec
(BuildSpec), the build record with its states and the allowed transitions between them, and
what a build pushed for its key (BuiltImage, signed when stored: promotion takes that digest,
never the tag) with when a tag may be reused instead of building (reuse_problem). No I/O (time
is passed in)."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import containerfile, content_address, repo, repo_schema
from pipeline.core.errors import PermanentError

BUILD_ID_RULE = "[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_BUILD_ID = re.compile(BUILD_ID_RULE)


class BuildState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {BuildState.SUCCEEDED, BuildState.FAILED, BuildState.SKIPPED, BuildState.CANCELLED}
)

# queued/running -> queued is a retry (TemporaryError) or a redelivery after a lost worker;
# running -> running is a redelivered task (acks_late) starting again.
_ALLOWED: Mapping[BuildState, frozenset[BuildState]] = {
    BuildState.QUEUED: frozenset(
        {
            BuildState.QUEUED,
            BuildState.RUNNING,
            BuildState.SKIPPED,
            BuildState.FAILED,
            BuildState.CANCELLED,
        }
    ),
    BuildState.RUNNING: frozenset(
        {
            BuildState.QUEUED,
            BuildState.RUNNING,
            BuildState.SUCCEEDED,
            BuildState.SKIPPED,
            BuildState.FAILED,
            BuildState.CANCELLED,
        }
    ),
}


class InvalidTransition(ValueError):
    pass


def is_build_id(value: str) -> bool:
    return bool(_BUILD_ID.fullmatch(value))


@dataclass(frozen=True)
class BuildRecord:
    id: str
    image: str
    cluster: str
    state: BuildState = BuildState.QUEUED
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    commit_sha: str = ""
    build_key: str = ""
    target: str = ""  # <registry>/<image>:<key[:20]>
    digest: str = ""  # sha256:… of the pushed (or reused) manifest
    error: str = ""
    failing_step: str = ""  # e.g. "STEP 4/4: RUN make"
    failing_line: int | None = None  # line of that step in images/<image>/Containerfile
    attempts: int = 0
    # what the pushed image changes against its base (core/image_changes.py's JSON form),
    # added after the build succeeded; None until analysed
    changes: dict[str, Any] | None = None
    # the content lint's kept findings (lint_finding.Finding.as_dict), errors first
    content_findings: tuple[dict[str, Any], ...] = ()

    @property
    def reference(self) -> str:
        """`<registry>/<image>@<digest>` once a digest is known, else ""."""
        if not self.digest or not self.target:
            return ""
        repository = self.target.rsplit(":", 1)[0] if _has_tag(self.target) else self.target
        return f"{repository}@{self.digest}"

    def to_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["state"] = self.state.value
        return document

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> BuildRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in document.items() if k in known}
        values["state"] = BuildState(values.get("state", BuildState.QUEUED.value))
        if not isinstance(values.get("changes"), dict):
            values["changes"] = None  # checked where it is read (ImageChanges.from_json)
        values["content_findings"] = finding_documents(values.get("content_findings"))
        return cls(**values)


def finding_documents(raw: object) -> tuple[dict[str, Any], ...]:
    """The well-formed content findings of a stored record; anything else is dropped."""
    shape = {"id": str, "severity": str, "path": str, "message": str}
    return tuple(
        {name: item.get(name) for name in (*shape, "line")}
        for item in (raw if isinstance(raw, list | tuple) else ())
        if isinstance(item, dict)
        and all(isinstance(item.get(name), kind) for name, kind in shape.items())
        and item["severity"] in ("error", "warning")
        and (item.get("line") is None or type(item.get("line")) is int)
    )


def _has_tag(reference: str) -> bool:
    return reference.rfind(":") > reference.rfind("/")


def queued(
    build_id: str,
    *,
    image: str,
    cluster: str,
    now: float,
    commit_sha: str = "",
    build_key: str = "",
) -> BuildRecord:
    if not is_build_id(build_id):
        raise ValueError(f"build id {build_id!r} must match {BUILD_ID_RULE}")
    return BuildRecord(
        id=build_id,
        image=image,
        cluster=cluster,
        created_at=now,
        updated_at=now,
        commit_sha=commit_sha,
        build_key=build_key,
    )


def transition(
    record: BuildRecord, state: BuildState, *, now: float, **changes: Any
) -> BuildRecord:
    """The record in `state`; InvalidTransition when a finished build would change state."""
    if state not in _ALLOWED.get(record.state, frozenset()):
        raise InvalidTransition(f"build {record.id}: cannot go from {record.state} to {state}")
    timestamps: dict[str, Any] = {"updated_at": now}
    if state is BuildState.RUNNING:
        timestamps["started_at"] = now
        timestamps["finished_at"] = None
    elif state.terminal:
        timestamps["finished_at"] = now
    return dataclasses.replace(record, state=state, **timestamps, **changes)


def begin_attempt(record: BuildRecord, *, now: float) -> BuildRecord:
    """Count one more attempt (a first run, a retry or a redelivery) without changing state."""
    return dataclasses.replace(record, attempts=record.attempts + 1, updated_at=now)


def start(record: BuildRecord, *, now: float) -> BuildRecord:
    return transition(record, BuildState.RUNNING, now=now)


def succeed(record: BuildRecord, *, digest: str, now: float) -> BuildRecord:
    return transition(record, BuildState.SUCCEEDED, now=now, digest=digest, error="")


def skip(record: BuildRecord, *, digest: str, now: float) -> BuildRecord:
    return transition(record, BuildState.SKIPPED, now=now, digest=digest, error="")


def fail(
    record: BuildRecord, *, error: str, now: float, step: str = "", line: int | None = None
) -> BuildRecord:
    return transition(
        record, BuildState.FAILED, now=now, error=error, failing_step=step, failing_line=line
    )


def requeue(record: BuildRecord, *, error: str, now: float) -> BuildRecord:
    """Back to queued after a temporary failure, keeping the error until the next attempt."""
    return transition(record, BuildState.QUEUED, now=now, error=error)


def cancel(record: BuildRecord, *, now: float, reason: str = "") -> BuildRecord:
    return transition(record, BuildState.CANCELLED, now=now, error=reason)


LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_BASE_NAME = "org.opencontainers.image.base.name"
LABEL_BASE_DIGEST = "org.opencontainers.image.base.digest"
LABEL_IMAGE = "layering.image"
LABEL_CLUSTER_BASE = "layering.cluster-base"
LABEL_BUILD_KEY = "layering.build-key"
BASE_IMAGE_ARG = "BASE_IMAGE"


@dataclass(frozen=True)
class BuildRequest:
    """One (image, cluster) build as asked for. `source`: a checkout directory, or a Git
    repository (work tree or bare mirror) holding `commit_sha`. `build_key`: the key the
    planner computed; the build checks it against the key of what it loaded (a stale plan).
    `push=False` builds only: no registry check, nothing pushed. `revision` and `source_url`:
    the provenance labels of a build from a directory (`layering build` reads them from the
    checkout); a worker's come from `commit_sha` and LAYERING_REPO_URL."""

    source: Path
    image: str
    cluster: str
    commit_sha: str | None = None
    build_key: str | None = None
    push: bool = True
    revision: str = ""
    source_url: str = ""


@dataclass(frozen=True)
class Checkout:
    """What a build reads from its source: the repository model and the build context."""

    repository: repo.Repository
    context: Path  # images/<image>/ as a directory on disk


@dataclass(frozen=True)
class BuildSpec:
    """Everything buildah needs for one (image, cluster) build."""

    image: str
    cluster: str
    build_key: str
    target: str  # <registry>/<image>:<key[:20]>
    base: str  # <cluster base repository>@<cluster base digest>
    containerfile: str  # the image's Containerfile with the final FROM pinned to `base`
    context: Path  # images/<image>/
    build_args: Mapping[str, str]
    labels: Mapping[str, str]
    entitlement: bool = False
    allow: tuple[repo_schema.Waiver, ...] = ()  # image.yaml's waivers (the content lint's too)

    @property
    def repository(self) -> str:
        """`target` without its tag: where the build's manifests live."""
        return self.target.rsplit(":", 1)[0] if _has_tag(self.target) else self.target


@dataclass(frozen=True)
class RegistryImage:
    """What the registry serves under a reference: the manifest digest and its config's labels."""

    digest: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class BuiltImage:
    """The manifest a build of `build_key` pushed (or reused, its labels checked) to
    `repository`. Promotion takes this digest, never what the tag names later: anyone who can
    push to the registry can move a tag."""

    build_key: str
    repository: str
    digest: str
    build_id: str = ""
    recorded_at: float = 0.0


BUILT_MAC_FIELD = "mac"


def signed_built(key: bytes, built: BuiltImage) -> dict[str, Any]:
    """The stored form of a BuiltImage: its fields plus an HMAC-SHA256 over all of them, under
    the services' key (LAYERING_VERIFICATION_KEY), which no build can reach."""
    document: dict[str, Any] = dataclasses.asdict(built)
    document[BUILT_MAC_FIELD] = _built_mac(key, document)
    return document


def trusted_built(key: bytes, stored: Mapping[str, Any]) -> BuiltImage | None:
    """The BuiltImage in a stored document when its MAC is right; else None (unsigned, forged,
    altered, or written with another key)."""
    document = dict(stored)
    given = document.pop(BUILT_MAC_FIELD, None)
    if not isinstance(given, str) or not hmac.compare_digest(given, _built_mac(key, document)):
        return None
    try:
        return BuiltImage(**document)
    except TypeError:
        return None


def _built_mac(key: bytes, document: Mapping[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def reuse_problem(spec: BuildSpec, found: RegistryImage) -> str:
    """Why the image already under `spec.target` is not this build ("" when it is): build keys
    are predictable, so a tag is reused only when it carries the build's key and base digest."""
    for label in (LABEL_BUILD_KEY, LABEL_BASE_DIGEST):
        expected = spec.labels.get(label, "")
        actual = found.labels.get(label, "")
        if not actual:
            return f"its config has no {label} label"
        if actual != expected:
            return f"its {label} label is {actual}, not {expected}"
    return ""


def build_spec(
    *,
    image: repo.Image,
    cluster: repo.Cluster,
    context: Path,
    commit_sha: str = "",
    source_url: str = "",
) -> BuildSpec:
    """The build of `image` on `cluster`'s base digest; PermanentError when it cannot be built."""
    if image.containerfile is None:
        raise PermanentError(f"{image.containerfile_path}: missing or unreadable")
    if image.tree_id is None:
        raise PermanentError(f"{image.directory}: tree id unknown; cannot compute the build key")
    base = str(cluster.base_image.with_digest(cluster.base_digest))
    try:
        rendered = containerfile.pin_final_from(image.containerfile, base)
    except containerfile.ContainerfileError as exc:
        where = image.containerfile_path + (f":{exc.line}" if exc.line else "")
        raise PermanentError(f"{where}: {exc}") from None
    key = content_address.build_key(
        tree_id=image.tree_id,
        base_digest=cluster.base_digest,
        build_args=image.settings.build_args,
    )
    labels = {
        LABEL_SOURCE: source_url,
        LABEL_REVISION: commit_sha,
        LABEL_BASE_NAME: base,
        LABEL_BASE_DIGEST: cluster.base_digest,
        LABEL_IMAGE: image.name,
        LABEL_CLUSTER_BASE: str(cluster.base_image),
        LABEL_BUILD_KEY: key,
    }
    return BuildSpec(
        image=image.name,
        cluster=cluster.name,
        build_key=key,
        target=f"{cluster.image_repository(image.name)}:{content_address.tag(key)}",
        base=base,
        containerfile=rendered,
        context=context,
        build_args={**image.settings.build_args, BASE_IMAGE_ARG: base},
        labels={name: value for name, value in labels.items() if value},
        entitlement=image.settings.entitlement,
        allow=image.settings.allow,
    )


@dataclass(frozen=True)
class BuildLease:
    """Who runs a build right now: the task delivery (`task_id`) and its process (`holder`,
    unique per acquisition), until `deadline` (Redis server time) unless renewed. A lease past
    its deadline means the worker vanished: its build is delivered again (flows/build_sweep)."""

    build_id: str
    task_id: str
    holder: str
    deadline: float = 0.0
