"""The steps after a promotion lands, as a durable record (issue 11): the
`layering/promote/<cluster>` statuses and the clusters whose rollouts to watch, written to Redis
BEFORE the push and removed only once the statuses are queued and the watches enqueued. A
promote run that finds nothing to commit completes the records still pending for its
environment, so a worker killed after the push, or a Redis or GitHub outage then, delays the
follow-ups but never loses them (at least once; each step is safe to repeat). No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.core import commit_status


@dataclass(frozen=True)
class PostPush:
    """The follow-ups of one promotion of `environment` planned at `base_head`."""

    environment: str
    status_sha: str  # the pushed head that asked for the promotion: its statuses go there
    base_head: str  # the branch head the promotion commit was made on
    statuses: tuple[commit_status.Status, ...]
    clusters: tuple[str, ...]  # kube clusters whose rollouts to watch
    commit_sha: str | None = None  # the promotion commit, once the push returned it
    pull_request: int | None = None  # pull-request mode: lands when that PR is merged
    created_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "status_sha": self.status_sha,
            "base_head": self.base_head,
            "statuses": [
                {
                    "context": s.context,
                    "state": s.state,
                    "description": s.description,
                    "target_url": s.target_url,
                }
                for s in self.statuses
            ],
            "clusters": list(self.clusters),
            "commit_sha": self.commit_sha,
            "pull_request": self.pull_request,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> PostPush:
        return cls(
            environment=str(document["environment"]),
            status_sha=str(document["status_sha"]),
            base_head=str(document["base_head"]),
            statuses=tuple(
                commit_status.Status(
                    str(s["context"]),
                    commit_status.state(str(s["state"])),
                    str(s["description"]),
                    s.get("target_url"),
                )
                for s in document.get("statuses", ())
            ),
            clusters=tuple(str(c) for c in document.get("clusters", ())),
            commit_sha=document.get("commit_sha"),
            pull_request=document.get("pull_request"),
            created_at=float(document.get("created_at", 0.0)),
        )


def landed_commit(record: PostPush, *, head_sha: str) -> str | None:
    """The commit whose rollouts to watch, seen from a run that found nothing to commit at
    `head_sha`; None when the promotion never landed (the branch is still where it was made).

    A commit push that returned names its commit. One whose worker died before the push
    returned, or a pull request merged since, landed when the branch moved on and holds what
    the plan renders (nothing to commit): its head runs the promoted images."""
    if record.commit_sha is not None and record.pull_request is None:
        return record.commit_sha
    if head_sha == record.base_head:
        return None
    return head_sha
