"""A cluster upgrade as data: a new base OS image for one cluster -> what would be rebuilt
(the planner, core/changes.py, over the repository with that cluster's baseImage replaced),
the cluster.yaml bytes with only the baseImage value changed, and the branch and pull request
that carry it. No I/O: flows/upgrade.py reads the release payload and pushes the branch.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from pipeline.core import changes, names, repo, yamlfile
from pipeline.core.errors import InputError, PermanentError

BRANCH_PREFIX = "layering/upgrade-"
# a top-level `baseImage:` line: the key, the value (plain or quoted), any trailing comment
_BASE_LINE = re.compile(
    rb"^(?P<key>baseImage[ \t]*:[ \t]*)(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s#]+)"
    rb"(?P<rest>[ \t]*(?:#[^\n]*)?\r?)$",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Upgrade:
    """One cluster moved onto `new_base`; `release` is the payload it came from, if any."""

    cluster: str
    current_base: str
    new_base: str
    release: str = ""
    node_image_tag: str = ""

    @property
    def changed(self) -> bool:
        return self.current_base != self.new_base

    @property
    def branch(self) -> str:
        return branch_for(self.cluster, self.new_base)

    @property
    def path(self) -> str:
        return f"{repo.CLUSTERS_DIR}/{self.cluster}/{repo.CLUSTER_FILE}"


def branch_for(cluster: str, new_base: str) -> str:
    """`layering/upgrade-<cluster>-<12 hex of the new base digest>`: one branch (and pull
    request) per cluster and base, whoever asks for it and however often."""
    digest = names.parse_image_ref(new_base).digest or ""
    return f"{BRANCH_PREFIX}{cluster}-{digest.removeprefix('sha256:')[:12]}"


def new_base_ref(reference: str, *, source: str) -> names.ImageRef:
    """A new base from outside (a payload, the cluster's ConfigMap): pinned by digest."""
    try:
        image = names.parse_image_ref(reference)
    except ValueError as exc:
        raise PermanentError(f"{source}: {exc}") from None
    if image.digest is None:
        raise PermanentError(
            f"{source}: {reference} is a tag; a cluster base must be pinned by digest "
            "(repo@sha256:…)"
        )
    return image.with_digest(image.digest)


def cluster_of(repository: repo.Repository, name: str) -> repo.Cluster:
    cluster = repository.clusters.get(name)
    if cluster is None:
        known = ", ".join(sorted(repository.clusters)) or "none"
        raise InputError(f"unknown cluster {name!r} (known: {known})")
    return cluster


def rebuilds(repository: repo.Repository, upgrade: Upgrade) -> changes.Plan:
    """Every image x cluster that the new base rebuilds (the planner's answer for a change of
    this cluster.yaml's baseImage)."""
    cluster = cluster_of(repository, upgrade.cluster)
    moved = dataclasses.replace(cluster, base_image=names.parse_image_ref(upgrade.new_base))
    after = dataclasses.replace(repository, clusters={**repository.clusters, cluster.name: moved})
    return changes.plan([cluster.path], before=repository, after=after)


def bumped_cluster_file(raw: bytes, upgrade: Upgrade) -> bytes:
    """cluster.yaml with the baseImage value replaced and every other byte kept (comments,
    order, quoting style of the value)."""
    matches = list(_BASE_LINE.finditer(raw))
    current = upgrade.current_base.encode()
    if len(matches) == 1:
        match = matches[0]
        value = match["value"]
        quote = value[:1] if value[:1] in (b'"', b"'") else b""
        new_value = quote + upgrade.new_base.encode() + quote
        bumped = raw[: match.start("value")] + new_value + raw[match.end("value") :]
    elif raw.count(current) == 1:
        # flow style or JSON (`{"baseImage": "…", …}`): the value is the one occurrence
        bumped = raw.replace(current, upgrade.new_base.encode())
    else:
        raise PermanentError(
            f"{upgrade.path}: baseImage is not on a line of its own nor written once as "
            f"{upgrade.current_base}; set it to {upgrade.new_base} by hand"
        )
    try:
        document = yamlfile.load(bumped)
    except ValueError:
        document = None
    if not isinstance(document, dict) or document.get("baseImage") != upgrade.new_base:
        raise PermanentError(
            f"{upgrade.path}: baseImage could not be replaced in place; set it to "
            f"{upgrade.new_base} by hand"
        )
    return bumped


def title(upgrade: Upgrade) -> str:
    digest = upgrade.new_base.rpartition("@")[2].removeprefix("sha256:")[:12]
    return f"layering: move cluster {upgrade.cluster} to base {digest}"


def body(upgrade: Upgrade, plan: changes.Plan) -> str:
    lines = [
        f"The base OS image of cluster `{upgrade.cluster}` changes:",
        "",
        f"- current: `{upgrade.current_base}`",
        f"- new: `{upgrade.new_base}`",
    ]
    if upgrade.release:
        tag = f" (tag `{upgrade.node_image_tag}`)" if upgrade.node_image_tag else ""
        lines.append(f"- from release `{upgrade.release}`{tag}")
    lines += ["", "Merging rebuilds:", ""]
    lines += [f"- `{t.image}` for pools {', '.join(t.pools)}" for t in plan.builds] or ["- nothing"]
    lines += [
        "",
        "The pull request's builds run on the new base; merge it before the cluster upgrades "
        "so its nodes keep a custom image built on the base they run.",
    ]
    return "\n".join(lines) + "\n"


def commit_message(upgrade: Upgrade) -> str:
    source = f" ({upgrade.release})" if upgrade.release else ""
    return (
        f"{title(upgrade)}{source}\n\n"
        f"baseImage: {upgrade.current_base}\n"
        f"       -> {upgrade.new_base}\n"
    )
