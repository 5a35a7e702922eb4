"""Promotion as reconciliation (issue 11) over small fakes of the ports: a plan that only waits
posts `pending` and is recorded, its triggers (a build's end, a soak's countdown, the sweep)
promote it again, and the post-push steps are recorded before the push and completed by a run
that finds nothing to commit."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass, field

from pipeline.core import (
    gate,
    post_push,
    promotion_commit,
    reconcile,
    repo,
    rollout,
    tasks,
    verification,
)
from pipeline.flows import promote as promote_flow
from pipeline.flows import reconcile as reconcile_flow
from pipeline.flows import rollout_watch
from tests.unit.test_promotion_flows import (
    DIGEST,
    HEAD,
    NOW,
    PUSHED,
    UPDATED,
    UPDATING,
    URL,
    Branches,
    Built,
    Clusters,
    Queue,
    Reader,
    Statuses,
    Store,
    Writer,
    clock,
    key,
    promoted_machineconfig,
    repository,
    run_gate,
    sources,
)


@dataclass
class Waits:
    """ports.PromotionWaits in memory."""

    recorded: dict[str, reconcile.EnvironmentWait] = field(default_factory=dict)
    records: dict[tuple[str, str], post_push.PostPush] = field(default_factory=dict)

    def record_wait(self, wait: reconcile.EnvironmentWait) -> None:
        self.recorded[wait.slot] = wait

    def clear_wait(self, environment: str) -> None:
        self.recorded.pop(environment, None)

    def waits(self) -> list[reconcile.EnvironmentWait]:
        return list(self.recorded.values())

    def save_post_push(self, record: post_push.PostPush) -> None:
        self.records[(record.environment, record.base_head)] = record

    def remove_post_push(self, environment: str, base_head: str) -> None:
        self.records.pop((environment, base_head), None)

    def post_pushes(self, environment: str | None = None) -> list[post_push.PostPush]:
        return [r for (e, _), r in self.records.items() if environment in (None, e)]


@dataclass
class Activity:
    building: dict[str, reconcile.BuildUnderway] = field(default_factory=dict)

    def underway(self, build_keys: Collection[str]) -> dict[str, reconcile.BuildUnderway]:
        return {k: v for k, v in self.building.items() if k in build_keys}


def building() -> Activity:
    return Activity({key(): reconcile.BuildUnderway(key(), "running", NOW - 12)})


class CrashingAfterPush:
    """A writer whose worker dies after the push landed (the post-push steps never ran):
    `write` pushes and raises; the branch then holds the promotion commit."""

    def __init__(self, at_head: repo.Repository, landed: repo.Repository) -> None:
        self.head, self.model, self.landed = HEAD, at_head, landed

    def write(
        self, branch: str, change_for: promotion_commit.ChangeFor
    ) -> promotion_commit.WriteResult:
        change = change_for(self.head, self.model)
        if change is None or change.empty:
            return promotion_commit.WriteResult(self.head, None, 1, change)
        self.head, self.model = PUSHED, self.landed
        raise SystemExit("worker killed after the push")


def run(
    writer: object,
    *,
    store: Store,
    built: Built | None = None,
    activity: Activity | None = None,
    waits: Waits,
    statuses: Statuses,
    queue: Queue,
    now: float = NOW,
) -> dict[str, object]:
    return promote_flow.run(
        HEAD,
        "nonprod",
        writer=writer,  # type: ignore[arg-type]
        sources=sources(store, built=built),
        reporter=statuses,
        queue=queue,
        now=clock(now),
        activity=activity or Activity(),
        waits=waits,
    )


def test_a_build_underway_is_a_wait_pending_until_it_finishes() -> None:
    statuses, queue, store, waits = Statuses(), Queue(), Store(), Waits()
    summary = run(
        Writer(repository()),
        store=store,
        built=Built(),
        activity=building(),
        waits=waits,
        statuses=statuses,
        queue=queue,
    )
    assert summary["commit_sha"] is None
    assert summary["refusals"] == []
    assert statuses.states("layering/promote/nonprod") == ["pending"]
    (_, first), *_ = statuses.reported
    assert first.description.startswith("waiting: nonprod/worker waits for the build of firewalld")
    assert "underway for 12s" in first.description
    assert waits.waits() == [reconcile.EnvironmentWait("nonprod", HEAD, (key(),), None, NOW)]
    assert all(c.name != tasks.Promote.NAME for c in queue.sent)

    # the build finishes: its report promotes the waiting environment again
    sent = Queue()
    record = {"build_key": key(), "state": "succeeded"}
    assert reconcile_flow.build_finished(record, waits=waits, queue=sent) == ["nonprod"]
    assert sent.sent == [tasks.Promote(HEAD, "nonprod").call()]
    # ... which commits now, and forgets the wait
    statuses = Statuses()
    summary = run(
        Writer(repository()),
        store=store,
        waits=waits,
        statuses=statuses,
        queue=Queue(),
    )
    assert summary["commit_sha"] == PUSHED
    assert statuses.states("layering/promote/nonprod") == ["success"]
    assert waits.waits() == []
    assert waits.records == {}


def test_no_build_underway_is_a_failure_that_needs_a_person() -> None:
    statuses, waits = Statuses(), Waits()
    summary = run(
        Writer(repository()),
        store=Store(),
        built=Built(),
        waits=waits,
        statuses=statuses,
        queue=Queue(),
    )
    assert len(summary["refusals"]) == 2  # type: ignore[arg-type]
    assert statuses.states("layering/promote/nonprod") == ["failure"]
    assert waits.waits() == []


def test_a_soak_is_a_wait_scheduled_for_its_end() -> None:
    statuses, queue, store, waits = Statuses(), Queue(), Store(), Waits()
    store.record_verification(
        verification.Verification(
            "nonprod", DIGEST, NOW - 600, verification.VerificationMethod.TIME
        )
    )
    summary = promote_flow.run(
        HEAD,
        "prod",
        writer=Writer(repository()),
        sources=sources(store, readers={"nonprod-admin": Reader([UPDATED])}),
        reporter=statuses,
        queue=queue,
        now=clock(),
        activity=Activity(),
        waits=waits,
    )
    assert summary["commit_sha"] is None
    (_, status), *_ = statuses.reported
    assert status.state == "pending"
    assert "soaking on nonprod, 50m left" in status.description
    assert len(status.description) <= 140
    wait = waits.recorded["prod"]
    assert wait.due == NOW + 3000
    assert wait.soak_seconds == 3600  # /metrics: waiting past soak + 1 hour is an alert
    promote = [c for c in queue.sent if c.name == tasks.Promote.NAME]
    assert promote == [tasks.Promote(HEAD, "prod").call(countdown=3000.5)]


def test_post_push_steps_survive_a_worker_lost_after_the_push() -> None:
    statuses, queue, store, waits = Statuses(), Queue(), Store(), Waits()
    landed = repository({path: content for path, content in _rendered().items()})
    writer = CrashingAfterPush(repository(), landed)
    with contextlib.suppress(SystemExit):
        run(writer, store=store, waits=waits, statuses=statuses, queue=queue)
    # recorded before the push; nothing sent yet
    (record,) = waits.post_pushes("nonprod")
    assert (record.base_head, record.commit_sha, record.clusters) == (HEAD, None, ("nonprod",))
    assert statuses.reported == []

    # the sweep finds it once it is older than one interval, and promotes again
    swept = Queue()
    result = reconcile_flow.sweep(
        waits=waits, activity=Activity(), queue=swept, now=NOW + 61, interval=60
    )
    assert result == {"waits_over": [], "post_push": ["nonprod"]}
    assert swept.sent == [tasks.Promote(HEAD, "nonprod").call()]
    # that run finds nothing to commit, and completes the record on the landed head
    summary = run(writer, store=store, waits=waits, statuses=statuses, queue=queue)
    assert summary["commit_sha"] is None
    assert [(sha, s.context, s.state) for sha, s in statuses.reported] == [
        (HEAD, "layering/promote/nonprod", "success"),
        (HEAD, "layering/promote/nonprod-b", "success"),
    ]
    assert tasks.WatchRollout(PUSHED, "nonprod", "nonprod").call() in queue.sent
    assert waits.records == {}


def test_a_merged_promotion_pull_request_forgets_its_gates_pass() -> None:
    statuses, queue, store, waits = Statuses(), Queue(), Store(), Waits()
    for number in (12, 13):
        store.record_gate_pass(gate.WatchedGate(HEAD, "nonprod", number, state="success"))
    # the pull request made on "4"*40 was merged: the branch's head HEAD holds its MachineConfigs
    waits.save_post_push(
        post_push.PostPush("nonprod", HEAD, "4" * 40, (), ("nonprod",), pull_request=12)
    )
    landed = repository({path: content for path, content in _rendered().items()})
    summary = run(Writer(landed), store=store, waits=waits, statuses=statuses, queue=queue)
    assert summary["commit_sha"] is None
    assert tasks.WatchRollout(HEAD, "nonprod", "nonprod").call() in queue.sent
    assert waits.records == {}
    assert list(store.passes) == [("nonprod", 13)]  # another pull request's pass stays


def test_a_record_whose_push_never_landed_is_dropped() -> None:
    waits = Waits()
    waits.save_post_push(post_push.PostPush("nonprod", HEAD, HEAD, (), ("nonprod",)))
    record = waits.post_pushes()[0]
    assert post_push.landed_commit(record, head_sha=HEAD) is None
    assert post_push.landed_commit(record, head_sha=PUSHED) == PUSHED
    assert post_push.PostPush.from_json(record.to_json()) == record


def test_the_sweep_reruns_waits_that_are_over_only() -> None:
    waits = Waits()
    waits.record_wait(reconcile.EnvironmentWait("a", HEAD, (key(),), None, NOW))
    waits.record_wait(reconcile.EnvironmentWait("b", HEAD, (), NOW + 10, NOW))
    waits.record_wait(reconcile.EnvironmentWait("c", HEAD, (), NOW - 1, NOW))
    queue = Queue()
    result = reconcile_flow.sweep(
        waits=waits, activity=building(), queue=queue, now=NOW, interval=60
    )
    assert result["waits_over"] == ["c"]
    queue = Queue()
    result = reconcile_flow.sweep(
        waits=waits, activity=Activity(), queue=queue, now=NOW + 11, interval=60
    )
    # c was sent a moment ago: again an interval later, not at every sweep
    assert result["waits_over"] == ["a", "b"]


def test_a_downstream_wait_is_kept_apart_and_swept_into_its_own_task() -> None:
    # a downstream promotion (pull-request mode) waiting for nonprod's soak: its countdown may
    # be lost, so the sweep runs "layering.promote_downstream" again, not "layering.promote"
    downstream = reconcile.EnvironmentWait("prod", HEAD, (), NOW - 1, NOW, from_upstream="nonprod")
    own = reconcile.EnvironmentWait("prod", HEAD, (), NOW + 600, NOW)
    assert downstream.slot == "prod<-nonprod"
    assert own.slot == "prod"
    assert reconcile.EnvironmentWait.from_json(downstream.to_json()) == downstream
    waits = Waits()
    waits.record_wait(downstream)
    waits.record_wait(own)
    assert len(waits.waits()) == 2
    queue = Queue()
    result = reconcile_flow.sweep(
        waits=waits, activity=Activity(), queue=queue, now=NOW, interval=60
    )
    assert result["waits_over"] == ["prod<-nonprod"]
    assert queue.sent == [tasks.PromoteDownstream("prod", "nonprod").call()]


def _rendered() -> dict[str, bytes]:
    """The MachineConfigs the promotion of repository() writes."""
    plan = promote_flow.decide(
        repository(), environment="nonprod", source_commit=HEAD, sources=sources(Store()), now=NOW
    )
    change = promotion_commit.change_of(plan)
    assert change is not None
    return dict(change.writes)


def rolling_out_upstream() -> Store:
    """nonprod's worker pool is rolling out DIGEST (the watch recorded Updating)."""
    store = Store()
    state = rollout.RolloutState(rollout.Phase.UPDATING, 1, 2)
    store.record_rollout(
        rollout.record(
            state,
            cluster="nonprod",
            pool="worker",
            commit_sha=PUSHED,
            os_image_url=URL,
            observed_at=NOW - 30,
        )
    )
    return store


def promote_prod(store: Store, waits: Waits, statuses: Statuses, queue: Queue) -> None:
    promote_flow.run(
        HEAD,
        "prod",
        writer=Writer(repository()),
        sources=sources(store, readers={"nonprod-admin": Reader([UPDATED])}),
        reporter=statuses,
        queue=queue,
        now=clock(),
        activity=Activity(),
        waits=waits,
    )


def test_an_upstream_rollout_in_progress_is_a_wait_ended_by_its_verification() -> None:
    statuses, queue, store, waits = Statuses(), Queue(), rolling_out_upstream(), Waits()
    promote_prod(store, waits, statuses, queue)
    (_, status), *_ = statuses.reported
    assert status.state == "pending"
    assert "firewalld@sha256:cccccccccccc rolling out on nonprod" in status.description
    assert waits.recorded["prod"].upstreams == ("nonprod",)
    assert waits.recorded["prod"].due is None
    assert all(c.name != tasks.Promote.NAME for c in queue.sent)
    assert (
        reconcile.EnvironmentWait.from_json(waits.recorded["prod"].to_json())
        == (waits.recorded["prod"])
    )

    # the watch records the verification: the waiting promotion runs again by itself
    sent = Queue()
    rollout_watch.run(
        PUSHED,
        "nonprod",
        "nonprod",
        started_at=NOW - 60,
        branches=Branches(repository(promoted_machineconfig())),
        clusters=Clusters({"nonprod-admin": Reader([UPDATING, UPDATED])}),
        store=store,
        reporter=Statuses(),
        queue=sent,
        now=clock(),
        watch_seconds=600,
        timeout_seconds=3600,
        waits=waits,
    )
    assert store.proven[("nonprod", DIGEST)].healthy
    assert tasks.Promote(HEAD, "prod").call() in sent.sent
    # ... and now waits for the soak, no longer for the rollout
    statuses = Statuses()
    promote_prod(store, waits, statuses, Queue())
    (_, status), *_ = statuses.reported
    assert status.state == "pending"
    assert "soaking on nonprod" in status.description
    assert not waits.recorded["prod"].upstreams


def test_a_timed_out_upstream_rollout_needs_a_person() -> None:
    statuses, store, waits = Statuses(), rolling_out_upstream(), Waits()
    store.record_verification(
        verification.Verification(
            "nonprod",
            DIGEST,
            NOW,
            verification.VerificationMethod.ROLLOUT,
            healthy=False,
            message="rollout timed out after 1h",
        )
    )
    promote_prod(store, waits, statuses, Queue())
    assert statuses.states("layering/promote/prod") == ["failure"]
    assert waits.waits() == []


def test_the_gate_is_pending_while_the_upstream_rolls_out() -> None:
    statuses, queue, store = Statuses(), Queue(), rolling_out_upstream()
    merge = gate.MergeResult(repository(), "6" * 40, source="computed")
    assert run_gate(store, queue, statuses, merge) == "pending"
    ((_, status),) = statuses.reported
    assert "rolling out on nonprod" in status.description
    assert list(store.gates) == [("prod", 12)]
    # no polling countdown: the rollout watch re-checks the watched gates when it is done
    assert queue.sent == []
    # without a rollout in progress, "not verified" stays a failure
    assert run_gate(Store(), Queue(), Statuses(), merge) == "failure"
