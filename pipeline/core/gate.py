"""The gate of a pull request into an environment branch, decided as data (SPEC section 3): what
merging it would promote, judged like a promotion under the rules in force on the branch head
(promotion_policy.py; never the pull request's own) -> `layering/gate/<environment>` success,
pending (only soak time is missing: re-checked when it is over) or failure; a merge that
conflicts fails. Also the gates kept for re-evaluation when a verification changes. No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pipeline.core import commit_status, promotion, promotion_policy, repo, verification


class GateState(StrEnum):
    SUCCESS = "success"
    PENDING = "pending"
    FAILURE = "failure"


@dataclass(frozen=True)
class GateDecision:
    state: GateState
    description: str
    remaining_seconds: float = 0.0  # when pending: soak time still to wait
    refusals: tuple[promotion.Refusal, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "description", commit_status.description(self.description))

    @property
    def recheck_after(self) -> float | None:
        """Seconds until a pending gate is decided again (a second past the soak, so the
        re-check never lands just before it ends); None when nothing is waited for."""
        return self.remaining_seconds + 1 if self.state is GateState.PENDING else None

    def status(self, environment: str, *, target_url: str | None = None) -> commit_status.Status:
        return commit_status.Status(
            commit_status.gate_context(environment),
            _STATES[self.state],
            self.description,
            target_url,
        )


_STATES: Mapping[GateState, commit_status.State] = {
    GateState.SUCCESS: "success",
    GateState.PENDING: "pending",
    GateState.FAILURE: "failure",
}


@dataclass(frozen=True)
class WatchedGate:
    """A pull request whose gate is decided again when a verification changes; once it passes,
    the same record with state "success" is kept as its pass (ports_gate)."""

    head_sha: str
    environment: str
    pr_number: int
    head_ref: str = ""  # the pull request's branch: `layering/promote/<environment>` may auto-merge
    # the last verdict (pending or failure while watched, success as a pass) and its
    # description, as the status said it: what the dashboard shows of the gate
    state: str = ""
    description: str = ""


@dataclass(frozen=True)
class MergeResult:
    """What merging a pull request's head into its env branch gives: the repository at the
    merge commit, or the paths that keep it from merging (or no common history at all)."""

    repository: repo.Repository | None
    commit_sha: str | None
    conflicts: tuple[str, ...] = ()
    source: str = ""  # the ref the merge commit was read from, or "computed"
    unrelated: bool = False


def decide(
    rules: promotion_policy.InForce,
    *,
    lookups: Mapping[tuple[str, str], promotion.DigestLookup],
    verifications: Mapping[tuple[str, str], verification.Verification],
    now: float,
    public_key: bytes | None = None,
) -> GateDecision:
    """`layering/gate/<environment>` for a pull request whose merge result, under the rules
    in force on env/<environment>, is `rules`. With the signing `public_key`, a digest not
    signed by it fails the gate (the lookups say so) and so does an edited image policy."""
    repository, environment = rules.repository, rules.environment
    said = f"{rules.notice}: " if rules.notice else ""
    if not repository.clusters_in(environment) and not rules.refusals:
        return GateDecision(GateState.SUCCESS, f"{said}no cluster in environment {environment}")
    decided = promotion.plan(
        repository,
        environment=environment,
        source_commit="0" * 40,
        lookups=lookups,
        verifications=verifications,
        now=now,
        public_key=public_key,
    )
    refusals = (
        *rules.refusals,
        *decided.refusals,
        *promotion_policy.edited(rules, decided.steps),
        *promotion_policy.edited_policies(rules, decided.policies),
    )
    if not refusals:
        promoted = sum(1 for step in decided.steps if not isinstance(step, promotion.DeleteFile))
        return GateDecision(
            GateState.SUCCESS,
            f"{said}{promoted} pool(s) verified upstream and soaked; safe to merge",
        )
    soaking = [r for r in refusals if r.kind is promotion.RefusalKind.SOAKING]
    if len(soaking) == len(refusals):
        remaining = max(
            _remaining(repository, r, verifications=verifications, now=now) for r in soaking
        )
        return GateDecision(
            GateState.PENDING,
            f"{said}soaking: {promotion.format_duration(remaining)} left; {soaking[0]}",
            remaining_seconds=remaining,
            refusals=refusals,
        )
    blocking = [r for r in refusals if r not in soaking]
    return GateDecision(
        GateState.FAILURE, said + promotion.first_refusal(blocking), refusals=refusals
    )


def conflicted(environment: str, paths: Sequence[str], *, unrelated: bool = False) -> GateDecision:
    """`layering/gate/<environment>` for a pull request that cannot merge cleanly: nothing
    can be said about what it would promote until it is rebased."""
    if unrelated:
        return GateDecision(
            GateState.FAILURE,
            f"no history in common with env/{environment}; "
            f"open the pull request from a branch based on env/{environment}",
        )
    named = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return GateDecision(
        GateState.FAILURE,
        f"merge conflicts with env/{environment}"
        + (f" in {named}" if named else "")
        + "; rebase the pull request",
    )


def _remaining(
    repository: repo.Repository,
    refusal: promotion.Refusal,
    *,
    verifications: Mapping[tuple[str, str], verification.Verification],
    now: float,
) -> float:
    cluster = repository.clusters[refusal.cluster]
    assert cluster.promotes_from is not None
    proven = verifications[(cluster.promotes_from, refusal.digest)]
    return max(0.0, proven.verified_at + cluster.soak_seconds - now)
