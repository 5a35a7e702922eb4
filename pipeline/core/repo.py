"""The watched repository as data: files of a tree -> Repository(images, clusters) plus every
configuration problem found, each naming file and field. No I/O: adapters gather the files.

This module holds the model (Image, Cluster, Repository, Problem, the tree layout) and `parse`,
which reads a TreeListing into it; the schema of image.yaml and cluster.yaml is in
repo_schema.py (`repo.ImageSettings` and `repo.duration_seconds` name it here too)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from pipeline.core import names, repo_limits, repo_schema, yamlfile

IMAGES_DIR = "images"
CLUSTERS_DIR = "clusters"
CONTAINERFILE = "Containerfile"
IMAGE_SETTINGS = "image.yaml"
CLUSTER_FILE = "cluster.yaml"
MACHINECONFIGS_DIR = "machineconfigs"
# the static lint's rules (core/lint.py); the content rules' are content_rules.CONTENT_RULE_IDS
RULE_IDS = tuple(f"LAY{n:03}" for n in range(1, 12))
# schema errors reported per file: a hostile file can have thousands, one is enough to act on
MAX_PROBLEMS_PER_FILE = 20

# the image.yaml schema and the duration syntax, under the names callers use
ImageSettings = repo_schema.ImageSettings
duration_seconds = repo_schema.duration_seconds


@dataclass(frozen=True)
class Problem:
    """A repository configuration problem (lint rule LAY006)."""

    path: str
    message: str
    field: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


@dataclass(frozen=True)
class Image:
    name: str
    containerfile: str | None
    settings: repo_schema.ImageSettings = field(default_factory=repo_schema.ImageSettings)
    tree_id: str | None = None

    @property
    def directory(self) -> str:
        return f"{IMAGES_DIR}/{self.name}"

    @property
    def containerfile_path(self) -> str:
        return f"{self.directory}/{CONTAINERFILE}"


@dataclass(frozen=True)
class Cluster:
    name: str
    environment: str
    base_image: names.ImageRef
    registry: str
    pools: Mapping[str, str]
    promotes_from: str | None = None
    soak_seconds: int = 0
    kube_context: str | None = None
    auto_merge: bool = True  # resolved: cluster.yaml's autoMerge, else promotes_from is None

    @property
    def path(self) -> str:
        return f"{CLUSTERS_DIR}/{self.name}/{CLUSTER_FILE}"

    @property
    def branch(self) -> str:
        return f"env/{self.environment}"

    @property
    def base_digest(self) -> str:
        assert self.base_image.digest is not None  # validated as pinned at parse time
        return self.base_image.digest

    def image_repository(self, image: str) -> str:
        return f"{self.registry}/{image}"


@dataclass(frozen=True)
class Repository:
    images: Mapping[str, Image]
    clusters: Mapping[str, Cluster]
    machineconfigs: Mapping[str, bytes] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()

    def environments(self) -> list[str]:
        return sorted({cluster.environment for cluster in self.clusters.values()})

    def clusters_in(self, environment: str) -> list[Cluster]:
        return [c for _, c in sorted(self.clusters.items()) if c.environment == environment]

    def clusters_using(self, image: str) -> list[Cluster]:
        return [c for _, c in sorted(self.clusters.items()) if image in c.pools.values()]

    def assignments(self) -> list[tuple[Cluster, str, str]]:
        """(cluster, pool, image) for every pool assignment, sorted."""
        return [
            (cluster, pool, image)
            for _, cluster in sorted(self.clusters.items())
            for pool, image in sorted(cluster.pools.items())
        ]

    def problems_for(self, path_prefix: str) -> list[Problem]:
        return [p for p in self.problems if p.path.startswith(path_prefix)]


@dataclass(frozen=True)
class TreeListing:
    """What an adapter gathered from a directory or Git tree.

    `image_dirs` maps each directory under images/ to its Git tree id (None when unknown);
    `cluster_dirs` lists the directories under clusters/; `files` holds the contents of the
    Containerfiles, image.yaml, cluster.yaml and machineconfigs/*.yaml files that exist, except
    those over their size cap (`caps`), which the adapter left unread and lists in `oversized`
    (path -> size in bytes). `parse` checks the bytes in `files` against the caps again.
    """

    image_dirs: Mapping[str, str | None]
    cluster_dirs: Iterable[str]
    files: Mapping[str, bytes]
    # images whose files the adapter did not read (a plan reads only what it builds): listed
    # with their tree id, neither parsed nor reported as missing a Containerfile
    unread_images: frozenset[str] = frozenset()
    oversized: Mapping[str, int] = field(default_factory=dict)
    caps: repo_limits.FileCaps = repo_limits.DEFAULT_CAPS


def interesting(path: str) -> bool:
    """Whether a path's content is part of the repository model (adapters read only these)."""
    parts = path.split("/")
    if parts[0] == IMAGES_DIR:
        return len(parts) == 3 and parts[2] in (CONTAINERFILE, IMAGE_SETTINGS)
    if parts[0] == CLUSTERS_DIR:
        return (len(parts) == 3 and parts[2] == CLUSTER_FILE) or (
            # every extension a GitOps tool applies: a MachineConfig in a .yml must be seen too
            len(parts) == 4
            and parts[2] == MACHINECONFIGS_DIR
            and parts[3].endswith((".yaml", ".yml", ".json"))
        )
    return False


def _validation_problems(path: str, raw: bytes, exc: ValidationError) -> list[Problem]:
    errors = exc.errors()
    shown = errors[:MAX_PROBLEMS_PER_FILE]
    lines = yamlfile.key_lines(raw, [err["loc"] for err in shown])
    problems = []
    for err, line in zip(shown, lines, strict=True):
        where = ".".join(str(part) for part in err["loc"]) or "(document)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key; remove it or check its spelling"
        elif err["type"] == "missing":
            message = "required key is missing"
        problems.append(Problem(path, message, field=where, line=line))
    if len(errors) > len(shown):
        more = len(errors) - len(shown)
        problems.append(Problem(path, f"{more} more problems like these; fix the ones above first"))
    return problems


def _present(listing: TreeListing, path: str) -> bool:
    return path in listing.files or path in listing.oversized


def _bytes(listing: TreeListing, path: str, problems: list[Problem]) -> bytes | None:
    """A present file's bytes, or None with a problem when it is over its size cap."""
    size = listing.oversized.get(path)
    if size is None:
        raw = listing.files[path]
        if len(raw) <= listing.caps.cap_for(path):
            return raw
        size = len(raw)
    problems.append(Problem(path, repo_limits.oversize_message(path, size, listing.caps)))
    return None


def _load_mapping(path: str, raw: bytes, problems: list[Problem]) -> dict[str, Any] | None:
    try:
        document = yamlfile.load(raw)
    except yamlfile.YamlProblem as exc:
        problems.append(Problem(path, str(exc), line=exc.line))
        return None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        problems.append(Problem(path, f"must be a YAML mapping, found {type(document).__name__}"))
        return None
    return document


def _decode_containerfile(path: str, raw: bytes, problems: list[Problem]) -> str | None:
    if b"\0" in raw:
        problems.append(Problem(path, "is a binary file; a Containerfile must be UTF-8 text"))
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(Problem(path, f"is not UTF-8 text (bad byte at offset {exc.start})"))
        return None


def _parse_image(
    name: str, tree_id: str | None, listing: TreeListing, problems: list[Problem]
) -> Image | None:
    directory = f"{IMAGES_DIR}/{name}"
    if not names.is_dns_label(name):
        problems.append(
            Problem(directory, "image name must be a DNS label (a-z, 0-9, '-', at most 63)")
        )
        return None
    containerfile_path = f"{directory}/{CONTAINERFILE}"
    containerfile: str | None = None
    if not _present(listing, containerfile_path):
        problems.append(Problem(containerfile_path, "missing: every image needs a Containerfile"))
    elif (raw := _bytes(listing, containerfile_path, problems)) is not None:
        containerfile = _decode_containerfile(containerfile_path, raw, problems)
    settings = repo_schema.DEFAULT_IMAGE_SETTINGS
    settings_path = f"{directory}/{IMAGE_SETTINGS}"
    if _present(listing, settings_path) and (raw := _bytes(listing, settings_path, problems)):
        document = _load_mapping(settings_path, raw, problems)
        if document is not None:
            try:
                settings = repo_schema.ImageSettings.model_validate(document)
            except ValidationError as exc:
                problems.extend(_validation_problems(settings_path, raw, exc))
    return Image(name, containerfile, settings, tree_id)


def _parse_cluster(name: str, listing: TreeListing, problems: list[Problem]) -> Cluster | None:
    path = f"{CLUSTERS_DIR}/{name}/{CLUSTER_FILE}"
    if not names.is_dns_label(name):
        problems.append(Problem(f"{CLUSTERS_DIR}/{name}", "cluster name must be a DNS label"))
        return None
    if not _present(listing, path):
        problems.append(Problem(path, "missing: every cluster directory needs a cluster.yaml"))
        return None
    raw = _bytes(listing, path, problems)
    if raw is None:
        return None
    cluster, found = _parse_cluster_file(name, raw)
    problems.extend(found)
    return cluster


@functools.lru_cache(maxsize=256)
def _parse_cluster_file(name: str, raw: bytes) -> tuple[Cluster | None, tuple[Problem, ...]]:
    """A pure function of the file's bytes, memoised: a worker plans every push, and
    cluster.yaml files rarely change between pushes."""
    path = f"{CLUSTERS_DIR}/{name}/{CLUSTER_FILE}"
    problems: list[Problem] = []
    document = _load_mapping(path, raw, problems)
    if document is None:
        return None, tuple(problems)
    try:
        settings = repo_schema.ClusterSettings.model_validate(document)
    except ValidationError as exc:
        return None, tuple(_validation_problems(path, raw, exc))
    cluster = Cluster(
        name=name,
        environment=settings.environment,
        base_image=names.parse_image_ref(settings.base_image),
        registry=settings.registry,
        pools=dict(settings.pools),
        promotes_from=settings.promotes_from,
        soak_seconds=repo_schema.duration_seconds(settings.soak),
        kube_context=settings.kube.context if settings.kube else None,
        auto_merge=(
            settings.auto_merge if settings.auto_merge is not None else not settings.promotes_from
        ),
    )
    return cluster, ()


def _cross_check(
    images: Mapping[str, Image], clusters: Mapping[str, Cluster], problems: list[Problem]
) -> None:
    for cluster in clusters.values():
        for pool, image in sorted(cluster.pools.items()):
            if image not in images:
                known = ", ".join(sorted(images)) or "none"
                problems.append(
                    Problem(
                        cluster.path,
                        f"image {image!r} does not exist under images/ (known: {known})",
                        field=f"pools.{pool}",
                    )
                )
        upstream_name = cluster.promotes_from
        if upstream_name is None:
            continue
        upstream = clusters.get(upstream_name)
        if upstream is None:
            problems.append(
                Problem(cluster.path, f"unknown cluster {upstream_name!r}", field="promotesFrom")
            )
        elif upstream.environment == cluster.environment:
            problems.append(
                Problem(
                    cluster.path,
                    f"{upstream_name!r} is in the same environment {cluster.environment!r}; "
                    "promotion goes from one environment to the next",
                    field="promotesFrom",
                )
            )
        seen = {cluster.name}
        step: Cluster | None = upstream
        while step is not None and step.promotes_from is not None:
            if step.promotes_from in seen or step.name in seen:
                problems.append(
                    Problem(cluster.path, "promotesFrom forms a cycle", field="promotesFrom")
                )
                break
            seen.add(step.name)
            step = clusters.get(step.promotes_from)


def parse(listing: TreeListing) -> Repository:
    problems: list[Problem] = []
    images: dict[str, Image] = {}
    for name, tree_id in sorted(listing.image_dirs.items()):
        if name in listing.unread_images:
            images[name] = Image(name, None, repo_schema.DEFAULT_IMAGE_SETTINGS, tree_id)
            continue
        image = _parse_image(name, tree_id, listing, problems)
        if image is not None:
            images[name] = image
    clusters: dict[str, Cluster] = {}
    for name in sorted(set(listing.cluster_dirs)):
        cluster = _parse_cluster(name, listing, problems)
        if cluster is not None:
            clusters[name] = cluster
    _cross_check(images, clusters, problems)
    machineconfigs: dict[str, bytes] = {}
    for path in sorted({*listing.files, *listing.oversized}):
        if path.startswith(f"{CLUSTERS_DIR}/") and f"/{MACHINECONFIGS_DIR}/" in path:
            raw = _bytes(listing, path, problems)
            if raw is not None:
                machineconfigs[path] = raw
    return Repository(images, clusters, machineconfigs, tuple(problems))


def parse_files(
    files: Mapping[str, bytes], tree_ids: Mapping[str, str] | None = None
) -> Repository:
    """Convenience for tests and small trees: derive directories from a path -> bytes map."""
    tree_ids = tree_ids or {}
    image_dirs: dict[str, str | None] = {}
    cluster_dirs: set[str] = set()
    for path in files:
        parts = path.split("/")
        if len(parts) >= 3 and parts[0] == IMAGES_DIR:
            image_dirs[parts[1]] = tree_ids.get(parts[1])
        elif len(parts) >= 3 and parts[0] == CLUSTERS_DIR:
            cluster_dirs.add(parts[1])
    return parse(TreeListing(image_dirs, cluster_dirs, files))
