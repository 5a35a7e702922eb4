"""The promotion pull request as data (pull-request mode): its branch, title and body, and
whether an environment lets the service merge it. No I/O: adapters/promotion_requests.py pushes
the branch and opens, updates, merges or closes the pull request.

One pull request per environment, from `layering/promote/<environment>` (the service's own
branch, force-pushed with each new promotion) into `env/<environment>`. Its body lists, for each
pool, the old and new digest, the build key, the source commit and the verification the plan
required; it is for the reviewer, never read back to decide anything.
"""

from __future__ import annotations

from pipeline.core import machineconfig, promotion_commit, promotion_upstream, repo

BRANCH_PREFIX = "layering/promote/"
ENV_PREFIX = "env/"
# the marker reviewers and tools can search for; the body is regenerated on every update
MARKER = "<!-- layering:promotion -->"


def branch_for(environment: str) -> str:
    """The promotion branch of an environment: `layering/promote/<environment>`."""
    return f"{BRANCH_PREFIX}{environment}"


def environment_of(branch: str) -> str | None:
    """`nonprod` of `env/nonprod` or `layering/promote/nonprod`; None for any other branch."""
    for prefix in (ENV_PREFIX, BRANCH_PREFIX):
        if branch.startswith(prefix) and len(branch) > len(prefix):
            return branch[len(prefix) :]
    return None


def title(environment: str, change: promotion_commit.Change) -> str:
    written = [p for p in change.pools if p.digest is not None]
    removed = len(change.pools) - len(written)
    parts = [f"{len(written)} pool(s) to new images"] if written else []
    parts += [f"{removed} pool(s) back to the stock image"] if removed else []
    return f"layering: promote {environment}: {', '.join(parts) or 'MachineConfigs'}"


def old_digest(repository: repo.Repository, path: str) -> str | None:
    """The digest the MachineConfig at `path` boots now (None: no managed file there)."""
    raw = repository.machineconfigs.get(path)
    document = machineconfig.parse_managed(raw) if raw is not None else None
    url = ((document or {}).get("spec") or {}).get("osImageURL")
    if not isinstance(url, str) or "@" not in url:
        return None
    return url.rpartition("@")[2]


def verification(repository: repo.Repository, cluster_name: str) -> str:
    """What the plan required before this pool could be promoted, under the branch's rules."""
    cluster = repository.clusters.get(cluster_name)
    if cluster is None or cluster.promotes_from is None:
        return "first environment: no upstream verification required"
    upstream = repository.clusters.get(cluster.promotes_from)
    where = f"{upstream.name} ({upstream.environment})" if upstream else cluster.promotes_from
    soak = promotion_upstream.format_duration(cluster.soak_seconds)
    return f"verified on {where}, soaked {soak}"


def body(environment: str, change: promotion_commit.Change, base: repo.Repository) -> str:
    """Markdown: one row per pool (old -> new digest, build key, source commit, verification)
    against `base`, the env branch head the promotion branch starts from."""
    rows = [
        "| cluster/pool | image | old -> new digest | build key | source commit | verification |",
        "|---|---|---|---|---|---|",
    ]
    for pool in change.pools:
        old = old_digest(base, pool.path) or "stock image"
        new = pool.digest or "stock image (removed)"
        rows.append(
            f"| {pool.cluster}/{pool.pool} | {pool.image or '-'} | `{old}` -> `{new}` | "
            f"`{pool.build_key or '-'}` | `{pool.source_commit or '-'}` | "
            f"{verification(base, pool.cluster) if pool.digest else '-'} |"
        )
    return "\n".join(
        [
            MARKER,
            f"Promotion of `{ENV_PREFIX}{environment}`, rendered by coreos-layering-pipeline "
            f"on `{branch_for(environment)}`. Merging this pull request is the promotion; the "
            f"`layering/gate/{environment}` check judges it. The branch is force-pushed with "
            "each new promotion: do not push to it.",
            "",
            *rows,
            "",
        ]
    )


def auto_merge(repository: repo.Repository, environment: str) -> bool:
    """Whether the service may merge the environment's promotion pull request through the API
    once its gate is green: every cluster of the environment allows it (`autoMerge`)."""
    clusters = repository.clusters_in(environment)
    return bool(clusters) and all(cluster.auto_merge for cluster in clusters)
