"""What a commit range must build and promote: changed paths plus the repository before and
after -> Plan(builds, deleted images, affected environments). No I/O.

Rules (SPEC sections 3 and 4):

- a change under `images/<i>/` rebuilds `i` on every cluster whose pools use it (after);
- a `clusters/<c>/cluster.yaml` whose `baseImage`, `pools` or `registry` changed (or a cluster
  that is new) rebuilds every image that cluster uses. A registry change is a rebuild target
  too: the build key is the same, but images are pushed to `<registry>/<image>`, so the new
  registry needs the tag; the worker's "tag exists" check makes this a no-op where it exists;
- a deleted image builds nothing and is listed in `deleted_images`;
- only (image, cluster) pairs assigned in the after-repository are built, and never an image
  with a configuration problem (missing Containerfile, bad image.yaml): those are listed in
  `problems` instead;
- an environment is affected when one of its clusters gets a build, changes pools, is added,
  removed or moved between environments, or used a deleted image;
- `before=None` (a new repository, or no common history) means everything changed.

The repositories may be partial (see flows/history.py): `after` needs every cluster.yaml and the
image.yaml of images that get built; `before` needs the cluster.yaml files that changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core import content_address, repo


@dataclass(frozen=True)
class BuildTarget:
    """One (image, cluster) pair to build on that cluster's base digest."""

    image: str
    cluster: str
    environment: str
    build_key: str
    tree_id: str
    base_image: str
    base_digest: str
    repository: str
    pools: tuple[str, ...]
    reason: str
    build_args: Mapping[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return content_address.tag(self.build_key)

    @property
    def image_ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "cluster": self.cluster,
            "environment": self.environment,
            "build_key": self.build_key,
            "tag": self.tag,
            "image_ref": self.image_ref,
            "tree_id": self.tree_id,
            "base_image": self.base_image,
            "base_digest": self.base_digest,
            "pools": list(self.pools),
            "build_args": dict(sorted(self.build_args.items())),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Plan:
    builds: tuple[BuildTarget, ...] = ()
    deleted_images: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    changed_images: tuple[str, ...] = ()
    changed_clusters: tuple[str, ...] = ()
    problems: tuple[repo.Problem, ...] = ()
    # filled in by the flow that chose the range (flows/history.plan_range)
    base: str | None = None
    head: str | None = None
    note: str = ""

    @property
    def unassigned_images(self) -> tuple[str, ...]:
        """Changed images that no pool uses: they build nothing."""
        built = {target.image for target in self.builds}
        return tuple(
            image
            for image in self.changed_images
            if image not in built and image not in self.deleted_images
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "head": self.head,
            "note": self.note,
            "builds": [target.to_json() for target in self.builds],
            "deleted_images": list(self.deleted_images),
            "environments": list(self.environments),
            "changed_images": list(self.changed_images),
            "changed_clusters": list(self.changed_clusters),
            "unassigned_images": list(self.unassigned_images),
            "problems": [
                {"path": p.path, "field": p.field, "line": p.line, "message": str(p)}
                for p in self.problems
            ],
        }


def changed_images(changed_paths: Iterable[str]) -> set[str]:
    """Names of the image directories a set of changed paths touches."""
    return {
        parts[1]
        for path in changed_paths
        if len(parts := path.split("/")) >= 3 and parts[0] == repo.IMAGES_DIR
    }


def changed_cluster_files(changed_paths: Iterable[str]) -> set[str]:
    """Names of the clusters whose cluster.yaml changed."""
    return {
        parts[1]
        for path in changed_paths
        if len(parts := path.split("/")) == 3
        and parts[0] == repo.CLUSTERS_DIR
        and parts[2] == repo.CLUSTER_FILE
    }


def _cluster_rebuild_reason(old: repo.Cluster | None, new: repo.Cluster) -> str | None:
    if old is None:
        return f"cluster {new.name} added"
    changed = [
        name
        for name, differs in (
            ("baseImage", old.base_image != new.base_image),
            ("registry", old.registry != new.registry),
            ("pools", dict(old.pools) != dict(new.pools)),
        )
        if differs
    ]
    if not changed:
        return None
    return f"clusters/{new.name}/cluster.yaml: {', '.join(changed)} changed"


def rebuilds(
    changed_paths: Iterable[str], *, before: repo.Repository | None, after: repo.Repository
) -> dict[tuple[str, str], str]:
    """(image, cluster) -> reason for every assigned pair a change touches (before any check
    of the image itself). Needs only cluster.yaml files: flows/history.py uses it to choose which
    image.yaml files to read."""
    paths = list(changed_paths)
    pairs: dict[tuple[str, str], str] = {}
    if before is None:
        for cluster, _, image in after.assignments():
            pairs.setdefault((image, cluster.name), "no earlier commit to compare with")
        return dict(sorted(pairs.items()))
    for name in sorted(changed_cluster_files(paths)):
        changed = after.clusters.get(name)
        if changed is None:
            continue
        reason = _cluster_rebuild_reason(before.clusters.get(name), changed)
        if reason is not None:
            for image in sorted(set(changed.pools.values())):
                pairs.setdefault((image, name), reason)
    for image in sorted(changed_images(paths)):
        for cluster in after.clusters_using(image):
            pairs[(image, cluster.name)] = f"images/{image}/ changed"
    return dict(sorted(pairs.items()))


def _target(image: repo.Image, cluster: repo.Cluster, reason: str) -> BuildTarget:
    if image.tree_id is None:
        raise ValueError(f"{image.directory}: tree id unknown; the adapter must supply it")
    return BuildTarget(
        image=image.name,
        cluster=cluster.name,
        environment=cluster.environment,
        build_key=content_address.build_key(
            tree_id=image.tree_id,
            base_digest=cluster.base_digest,
            build_args=image.settings.build_args,
        ),
        tree_id=image.tree_id,
        base_image=str(cluster.base_image),
        base_digest=cluster.base_digest,
        repository=cluster.image_repository(image.name),
        pools=tuple(pool for pool, name in sorted(cluster.pools.items()) if name == image.name),
        reason=reason,
        build_args=dict(image.settings.build_args),
    )


def _affected_environments(
    paths: list[str], before: repo.Repository, after: repo.Repository, deleted: Iterable[str]
) -> set[str]:
    environments: set[str] = set()
    for name in changed_cluster_files(paths) | (before.clusters.keys() - after.clusters.keys()):
        old, new = before.clusters.get(name), after.clusters.get(name)
        if old is None or new is None or old.environment != new.environment:
            environments.update(c.environment for c in (old, new) if c is not None)
        elif dict(old.pools) != dict(new.pools):
            environments.add(new.environment)
    for image in deleted:
        environments.update(cluster.environment for cluster in before.clusters_using(image))
    return environments


def plan(
    changed_paths: Iterable[str], *, before: repo.Repository | None, after: repo.Repository
) -> Plan:
    """Every (image, cluster) pair whose build inputs the change touches, with build keys."""
    paths = sorted(set(changed_paths))
    touched = changed_images(paths) if before is not None else set(after.images)
    deleted = sorted(image for image in touched if image not in after.images)
    pairs = rebuilds(paths, before=before, after=after)
    candidates = touched | {image for image, _ in pairs}
    problems = [
        problem
        for problem in after.problems
        if problem.path.startswith(f"{repo.CLUSTERS_DIR}/")
        or any(problem.path.startswith(f"{repo.IMAGES_DIR}/{i}/") for i in candidates)
        or problem.path in {f"{repo.IMAGES_DIR}/{i}" for i in candidates}
    ]
    broken = {image for image in candidates if after.problems_for(f"{repo.IMAGES_DIR}/{image}/")}
    builds = [
        _target(after.images[image], after.clusters[cluster], reason)
        for (image, cluster), reason in pairs.items()
        if image in after.images and image not in broken
    ]
    environments = {target.environment for target in builds}
    if before is None:
        environments.update(after.environments())
        changed_clusters = sorted(after.clusters)
    else:
        environments |= _affected_environments(paths, before, after, deleted)
        changed_clusters = sorted(
            changed_cluster_files(paths) | (before.clusters.keys() - after.clusters.keys())
        )
    return Plan(
        builds=tuple(builds),
        deleted_images=tuple(deleted),
        environments=tuple(sorted(environments)),
        changed_images=tuple(sorted(touched)),
        changed_clusters=tuple(changed_clusters),
        problems=tuple(problems),
    )
