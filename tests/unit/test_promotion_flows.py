"""The promotion flows (promote, gate, rollout watch, base drift) over small fakes of their ports:
every status goes to the StatusReporter, every follow-up is a task of the contract sent through
the TaskQueue, and the store hears what the core decided. The real adapters are exercised in
tests/integration/test_promotion_*.py."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field

import pytest

from pipeline.core import (
    builds,
    commit_status,
    content_address,
    drift,
    gate,
    machineconfig,
    pipeline_gate,
    post_push,
    promotion_commit,
    reconcile,
    repo,
    rollout,
    tasks,
    verification,
    yamlfile,
)
from pipeline.core.errors import PermanentError
from pipeline.flows import drift as drift_flow
from pipeline.flows import gate as gate_flow
from pipeline.flows import promote as promote_flow
from pipeline.flows import promotion_inputs, rollout_watch

BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64
REGISTRY = "registry.example.com/layering"
TREE = "1" * 40
DIGEST = "sha256:" + "c" * 64
URL = f"{REGISTRY}/firewalld@{DIGEST}"
HEAD = "5" * 40
PUSHED = "9" * 40
NOW = 1_000_000.0


def cluster_yaml(
    environment: str, *, kube: bool = False, promotes_from: str | None = None, soak: str = "0s"
) -> bytes:
    document: dict[str, object] = {
        "environment": environment,
        "baseImage": BASE,
        "registry": REGISTRY,
        "pools": {"worker": "firewalld"},
        "soak": soak,
    }
    if kube:
        document["kube"] = {"context": f"{environment}-admin"}
    if promotes_from:
        document["promotesFrom"] = promotes_from
    return yamlfile.dump(document)


def repository(machineconfigs: Mapping[str, bytes] | None = None) -> repo.Repository:
    """nonprod (kube), nonprod-b (no kube), prod (kube, takes nonprod's digests after 1h)."""
    files = {
        "images/firewalld/Containerfile": b"FROM x\n",
        "clusters/nonprod/cluster.yaml": cluster_yaml("nonprod", kube=True),
        "clusters/nonprod-b/cluster.yaml": cluster_yaml("nonprod"),
        "clusters/prod/cluster.yaml": cluster_yaml(
            "prod", kube=True, promotes_from="nonprod", soak="1h"
        ),
        **(machineconfigs or {}),
    }
    return repo.parse_files(files, {"firewalld": TREE})


def key() -> str:
    return content_address.build_key(tree_id=TREE, base_digest=BASE.split("@")[1], build_args={})


def tag() -> str:
    return f"{REGISTRY}/firewalld:{content_address.tag(key())}"


def served() -> dict[str, str]:
    """The registry: the build's tag and its manifest by digest."""
    return {tag(): DIGEST, f"{REGISTRY}/firewalld@{DIGEST}": DIGEST}


def promoted_machineconfig() -> dict[str, bytes]:
    os_image = machineconfig.OsImage(
        image="firewalld",
        repository=f"{REGISTRY}/firewalld",
        digest=DIGEST,
        build_key="d" * 64,
        source_commit=HEAD,
        base_image=BASE,
    )
    return {
        machineconfig.path_for("nonprod", "worker"): machineconfig.render_yaml(
            pool="worker", os_image=os_image
        )
    }


# -- fakes of the ports ---------------------------------------------------------------------


@dataclass
class Statuses:
    reported: list[tuple[str, commit_status.Status]] = field(default_factory=list)

    def report(self, sha: str, status: commit_status.Status) -> None:
        self.reported.append((sha, status))

    def states(self, context: str) -> list[str]:
        return [status.state for _, status in self.reported if status.context == context]


@dataclass
class Queue:
    sent: list[tasks.TaskCall] = field(default_factory=list)

    def send(
        self,
        call: tasks.TaskCall,
        *,
        on_success: tasks.TaskCall | None = None,
        on_error: tasks.TaskCall | None = None,
    ) -> None:
        self.sent.append(call)

    def revoke(self, task_id: str) -> None:
        raise AssertionError("the promotion flows cancel nothing")


@dataclass
class Store:
    proven: dict[tuple[str, str], verification.Verification] = field(default_factory=dict)
    promoted: dict[tuple[str, str], verification.Promoted] = field(default_factory=dict)
    rollouts: list[rollout.RolloutRecord] = field(default_factory=list)
    drifts: dict[str, drift.Drift] = field(default_factory=dict)
    gates: dict[tuple[str, int], gate.WatchedGate] = field(default_factory=dict)
    passes: dict[tuple[str, int], gate.WatchedGate] = field(default_factory=dict)

    def record_verification(self, proven: verification.Verification) -> bool:
        self.proven[(proven.cluster, proven.digest)] = proven
        return True

    def verifications(
        self, clusters: Collection[str]
    ) -> dict[tuple[str, str], verification.Verification]:
        return {key: value for key, value in self.proven.items() if key[0] in clusters}

    def record_promoted(self, promoted: verification.Promoted) -> None:
        self.promoted[(promoted.cluster, promoted.pool)] = promoted

    def forget_promoted(self, cluster: str, pool: str) -> None:
        self.promoted.pop((cluster, pool), None)

    def record_rollout(self, record: rollout.RolloutRecord) -> None:
        self.rollouts.append(record)

    def rolling_out(self, clusters: Collection[str]) -> set[tuple[str, str]]:
        last = {(r.cluster, r.pool): r for r in self.rollouts if r.cluster in clusters}
        return reconcile.rollouts_in_progress(last.values())

    def record_drift(self, checked: drift.Drift) -> None:
        self.drifts[checked.cluster] = checked

    def watch_gate(self, watched: gate.WatchedGate) -> None:
        self.gates[(watched.environment, watched.pr_number)] = watched

    def unwatch_gate(self, environment: str, pr_number: int) -> None:
        self.gates.pop((environment, pr_number), None)

    def watched_gates(self) -> list[gate.WatchedGate]:
        return list(self.gates.values())

    def record_gate_pass(self, passed: gate.WatchedGate) -> None:
        self.passes[(passed.environment, passed.pr_number)] = passed

    def forget_gate_pass(self, environment: str, pr_number: int) -> None:
        self.passes.pop((environment, pr_number), None)

    def gate_passes(self) -> list[gate.WatchedGate]:
        return list(self.passes.values())


class Registry:
    def __init__(self, digests: Mapping[str, str]) -> None:
        self._digests = digests

    def digest_of(self, reference: str) -> str | None:
        return self._digests.get(reference)

    def image_of(self, reference: str) -> builds.RegistryImage | None:
        raise AssertionError("promotion reads digests, never labels")


@dataclass
class Built:
    """What the builds recorded: (build key, repository) -> digest."""

    digests: dict[tuple[str, str], str] = field(default_factory=dict)

    def record_built(self, built: builds.BuiltImage) -> None:
        self.digests[(built.build_key, built.repository)] = built.digest

    def built(self, build_key: str, repository: str) -> builds.BuiltImage | None:
        digest = self.digests.get((build_key, repository))
        return None if digest is None else builds.BuiltImage(build_key, repository, digest)


def recorded() -> Built:
    return Built({(key(), f"{REGISTRY}/firewalld"): DIGEST})


def sources(
    store: Store,
    *,
    registry: Mapping[str, str] | None = None,
    built: Built | None = None,
    readers: dict[str, Reader] | None = None,
) -> promotion_inputs.Sources:
    return promotion_inputs.Sources(
        registry=Registry(served() if registry is None else registry),
        store=store,
        built=recorded() if built is None else built,
        clusters=Clusters(readers or {}),
    )


class Writer:
    """The env branch at HEAD holds `at_head`; a change is 'pushed' as PUSHED."""

    def __init__(self, at_head: repo.Repository) -> None:
        self._at_head = at_head

    def write(
        self, branch: str, change_for: promotion_commit.ChangeFor
    ) -> promotion_commit.WriteResult:
        change = change_for(HEAD, self._at_head)
        pushed = PUSHED if change is not None and not change.empty else None
        return promotion_commit.WriteResult(HEAD, pushed, 1, change)


@dataclass
class Branches:
    at: repo.Repository
    merge: gate.MergeResult | None = None

    def at_commit(self, commit_sha: str, *, branch: str) -> repo.Repository:
        return self.at

    def at_branch(self, branch: str) -> repo.Repository:
        return self.at

    def pull_request_merge(self, head_sha: str, *, branch: str, pr_number: int) -> gate.MergeResult:
        assert self.merge is not None
        return self.merge


@dataclass
class Reader:
    """A cluster whose pool goes through `states`; the last one is where the watch ends, and
    what `running` says the pool runs (`runs`, the rendered osImageURL)."""

    states: list[rollout.RolloutState]
    base: drift.BaseImage | None = None
    runs: str | None = URL

    def watch_rollout(
        self,
        pool: str,
        *,
        expected_os_image_url: str,
        timeout: float,
        on_change: Callable[[rollout.RolloutState], None],
    ) -> rollout.RolloutState:
        assert expected_os_image_url == URL
        for state in self.states:
            on_change(state)
        return self.states[-1]

    def base_image(self) -> drift.BaseImage | None:
        return self.base

    def running(self, pool: str) -> rollout.Running | None:
        return rollout.Running(pool, self.runs, self.states[-1])


@dataclass
class Clusters:
    readers: dict[str, Reader]

    @contextlib.contextmanager
    def connect(self, context: str) -> Iterator[Reader]:
        if context not in self.readers:
            raise PermanentError(f"kube context {context!r}: not in the kubeconfig")
        yield self.readers[context]


def clock(start: float = NOW) -> Callable[[], float]:
    return lambda: start


# -- promote --------------------------------------------------------------------------------


def test_promote_reports_records_and_follows_up() -> None:
    statuses, queue, store = Statuses(), Queue(), Store()
    store.watch_gate(gate.WatchedGate("7" * 40, "prod", 3))
    summary = promote_flow.run(
        HEAD,
        "nonprod",
        writer=Writer(repository()),
        sources=sources(store),
        reporter=statuses,
        queue=queue,
        now=clock(),
    )
    assert summary == {"commit_sha": PUSHED, "head_sha": HEAD, "attempts": 1, "refusals": []}
    assert [(sha, s.context, s.state) for sha, s in statuses.reported] == [
        (HEAD, "layering/promote/nonprod", "success"),
        (HEAD, "layering/promote/nonprod-b", "success"),
    ]
    assert {(c, p, r.digest, r.commit_sha) for (c, p), r in store.promoted.items()} == {
        ("nonprod", "worker", DIGEST, PUSHED),
        ("nonprod-b", "worker", DIGEST, PUSHED),
    }
    # nonprod-b has no kube: verified by time; nonprod's rollout is watched
    assert {key: v.method for key, v in store.proven.items()} == {
        ("nonprod-b", DIGEST): verification.VerificationMethod.TIME
    }
    assert queue.sent == [
        tasks.WatchRollout(PUSHED, "nonprod", "nonprod").call(),
        tasks.Gate("7" * 40, "prod", 3).call(),
    ]


def test_a_refused_promotion_commits_and_watches_nothing() -> None:
    statuses, queue, store = Statuses(), Queue(), Store()
    summary = promote_flow.run(
        HEAD,
        "nonprod",
        writer=Writer(repository()),
        sources=sources(store, built=Built()),
        reporter=statuses,
        queue=queue,
        now=clock(),
    )
    assert summary["commit_sha"] is None
    assert len(summary["refusals"]) == 2
    assert statuses.states("layering/promote/nonprod") == ["failure"]
    assert store.promoted == {}
    assert store.proven == {}
    assert queue.sent == []


# -- gate -----------------------------------------------------------------------------------


def run_gate(
    store: Store,
    queue: Queue,
    statuses: Statuses,
    merge: gate.MergeResult,
    *,
    nonprod: Reader | None = None,
) -> str:
    outcome = gate_flow.run(
        HEAD,
        "prod",
        12,
        branches=Branches(repository(), merge),
        sources=sources(store, readers={"nonprod-admin": nonprod or Reader([UPDATED])}),
        reporter=statuses,
        queue=queue,
        now=clock(),
    )
    assert outcome["merge_sha"] == merge.commit_sha
    return str(outcome["state"])


def test_a_soaking_gate_is_watched_and_checked_again_when_the_soak_is_over() -> None:
    statuses, queue, store = Statuses(), Queue(), Store()
    store.record_verification(
        verification.Verification(
            "nonprod", DIGEST, NOW - 600, verification.VerificationMethod.ROLLOUT
        )
    )
    merge = gate.MergeResult(repository(), "6" * 40, source="computed")
    assert run_gate(store, queue, statuses, merge) == "pending"
    assert statuses.states("layering/gate/prod") == ["pending"]
    assert list(store.gates) == [("prod", 12)]
    assert queue.sent == [tasks.Gate(HEAD, "prod", 12).call(countdown=3000 + 1)]

    store.proven[("nonprod", DIGEST)] = verification.Verification(
        "nonprod", DIGEST, NOW - 3600, verification.VerificationMethod.ROLLOUT
    )
    assert run_gate(store, queue, statuses, merge) == "success"
    assert statuses.states("layering/gate/prod") == ["pending", "success"]
    assert store.gates == {}
    assert len(queue.sent) == 1
    # no longer watched, but the pipeline view still shows the verdict it passed under
    passed = store.passes[("prod", 12)]
    assert (passed.head_sha, passed.state) == (HEAD, "success")
    assert passed.description == statuses.reported[-1][1].description

    # a newer verdict replaces it: the pull request's head moved onto an unverified digest
    unverified = gate.MergeResult(repository(), "6" * 40)
    store.proven.clear()
    assert run_gate(store, queue, statuses, unverified) == "failure"
    assert store.passes == {}
    assert store.gates[("prod", 12)].state == "failure"


@pytest.mark.parametrize(
    ("gates", "passes", "shown"),
    [
        ([], [], (12, "promotion pull request open: lands when merged")),
        (
            [],
            [gate.WatchedGate(HEAD, "prod", 12, state="success", description="soaked")],
            (12, "gate success: soaked"),
        ),
        # a person's pull request that passed is no promotion on its way
        (
            [],
            [gate.WatchedGate(HEAD, "prod", 13, state="success", description="soaked")],
            (12, "promotion pull request open: lands when merged"),
        ),
        (
            [gate.WatchedGate(HEAD, "prod", 12, state="failure", description="not verified")],
            [gate.WatchedGate(HEAD, "prod", 12, state="success", description="soaked")],
            (12, "gate failure: not verified"),
        ),
    ],
    ids=["open", "passed", "another-passed", "watched-first"],
)
def test_the_pipeline_view_shows_the_gates_last_verdict(
    gates: list[gate.WatchedGate],
    passes: list[gate.WatchedGate],
    shown: tuple[int | None, str],
) -> None:
    assert pipeline_gate.shown("prod", watched=gates, passed=passes, post_pushes=[OURS]) == shown
    assert pipeline_gate.shown("nonprod", watched=gates, passed=passes, post_pushes=[OURS]) == (
        None,
        "",
    )


@pytest.mark.parametrize(
    ("merge", "text"),
    [
        (
            gate.MergeResult(None, None, ("clusters/prod/cluster.yaml",), "computed"),
            "merge conflicts with env/prod in clusters/prod/cluster.yaml",
        ),
        (
            gate.MergeResult(None, None, (), "computed", unrelated=True),
            "no history in common with env/prod",
        ),
        (gate.MergeResult(repository(), "6" * 40), "firewalld@sha256:cccccccccccc is not verified"),
    ],
)
def test_a_failing_gate_is_watched_until_it_passes(merge: gate.MergeResult, text: str) -> None:
    statuses, queue, store = Statuses(), Queue(), Store()
    assert run_gate(store, queue, statuses, merge) == "failure"
    ((sha, status),) = statuses.reported
    assert (sha, status.context, status.state) == (HEAD, "layering/gate/prod", "failure")
    assert text in status.description
    assert list(store.gates) == [("prod", 12)]
    # the dashboard shows the verdict the status gave
    watched = store.gates[("prod", 12)]
    assert (watched.state, watched.description) == ("failure", status.description)
    assert queue.sent == []


def test_the_gate_judges_by_the_rules_on_the_branch_head_not_the_pull_requests() -> None:
    statuses, queue, store = Statuses(), Queue(), Store()
    # the pull request drops prod's promotesFrom: under its own rules nothing would be checked
    relaxed = repo.parse_files(
        {
            "images/firewalld/Containerfile": b"FROM x\n",
            "clusters/nonprod/cluster.yaml": cluster_yaml("nonprod", kube=True),
            "clusters/prod/cluster.yaml": cluster_yaml("prod", kube=True),
        },
        {"firewalld": TREE},
    )
    merge = gate.MergeResult(relaxed, "6" * 40, source="computed")
    assert run_gate(store, queue, statuses, merge) == "failure"
    ((_, status),) = statuses.reported
    assert status.description.startswith("judged by env/prod's promotesFrom/soak, not this PR's: ")
    assert "firewalld@sha256:cccccccccccc is not verified on nonprod" in status.description


def proven_long_ago(store: Store) -> None:
    store.record_verification(
        verification.Verification(
            "nonprod", DIGEST, NOW - 7200, verification.VerificationMethod.ROLLOUT
        )
    )


@pytest.mark.parametrize(
    ("nonprod", "state", "text"),
    [
        (None, "success", "1 pool(s) verified upstream and soaked"),
        (
            Reader([rollout.RolloutState(rollout.Phase.DEGRADED, 1, 2, "NodeDegraded: oops")]),
            "failure",
            "failed on nonprod: pool worker on it is degraded now: NodeDegraded: oops",
        ),
        (
            Reader([rollout.RolloutState(rollout.Phase.UPDATING, 1, 2)]),
            "failure",
            "failed on nonprod: pool worker is still updating to it (1/2 machines)",
        ),
        (
            Reader(
                [rollout.RolloutState(rollout.Phase.UPDATED, 2, 2)],
                runs=f"{REGISTRY}/x@{BASE.split('@')[1]}",
            ),
            "failure",
            "failed on nonprod: no pool runs it now (worker runs sha256:aaaaaaaaaaaa)",
        ),
    ],
    ids=["runs-it", "degraded", "updating", "runs-another"],
)
def test_the_gate_reads_the_upstream_pools_again(
    nonprod: Reader | None, state: str, text: str
) -> None:
    statuses, queue, store = Statuses(), Queue(), Store()
    proven_long_ago(store)
    merge = gate.MergeResult(repository(), "6" * 40, source="computed")
    assert run_gate(store, queue, statuses, merge, nonprod=nonprod) == state
    assert text in statuses.reported[-1][1].description


def test_an_upstream_whose_pools_cannot_be_read_confirms_nothing() -> None:
    statuses, queue, store = Statuses(), Queue(), Store()
    proven_long_ago(store)
    outcome = gate_flow.run(
        HEAD,
        "prod",
        12,
        branches=Branches(repository(), gate.MergeResult(repository(), "6" * 40)),
        sources=sources(store, readers={}),
        reporter=statuses,
        queue=queue,
        now=clock(),
    )
    assert outcome["state"] == "failure"
    assert "its pools cannot be read: kube context 'nonprod-admin'" in outcome["description"]


@pytest.mark.parametrize(
    ("registry", "built", "text"),
    [
        ({}, Built(), "not built: no build recorded this build key"),
        ({tag(): DIGEST}, None, "the registry no longer serves sha256:cccccccccccc"),
        (
            {tag(): "sha256:" + "f" * 64, f"{REGISTRY}/firewalld@{DIGEST}": DIGEST},
            None,
            "tag moved: it names sha256:ffffffffffff, the build recorded sha256:cccccccccccc",
        ),
    ],
    ids=["not-recorded", "gone", "tag-moved"],
)
def test_promotion_takes_the_recorded_digest_only(
    registry: dict[str, str], built: Built | None, text: str
) -> None:
    statuses, queue, store = Statuses(), Queue(), Store()
    summary = promote_flow.run(
        HEAD,
        "nonprod",
        writer=Writer(repository()),
        sources=sources(store, registry=registry, built=built),
        reporter=statuses,
        queue=queue,
        now=clock(),
    )
    assert summary["commit_sha"] is None
    assert text in summary["refusals"][0]


# -- rollout watch --------------------------------------------------------------------------

UPDATING = rollout.RolloutState(rollout.Phase.UPDATING, 1, 2)
UPDATED = rollout.RolloutState(rollout.Phase.UPDATED, 2, 2)
DEGRADED = rollout.RolloutState(rollout.Phase.DEGRADED, 1, 2, "NodeDegraded: boot failed")


def watch(
    states: list[rollout.RolloutState],
    *,
    started_at: float | None,
    store: Store,
    downstream: bool = False,
) -> tuple[dict[str, str], Statuses, Queue]:
    statuses, queue = Statuses(), Queue()
    phases = rollout_watch.run(
        PUSHED,
        "nonprod",
        "nonprod",
        started_at=started_at,
        branches=Branches(repository(promoted_machineconfig())),
        clusters=Clusters({"nonprod-admin": Reader(states)}),
        store=store,
        reporter=statuses,
        queue=queue,
        now=clock(),
        watch_seconds=600,
        timeout_seconds=3600,
        downstream=downstream,
    )
    return phases, statuses, queue


def test_a_pool_still_updating_is_watched_again() -> None:
    store = Store()
    phases, statuses, queue = watch([UPDATING], started_at=None, store=store)
    assert phases == {"worker": "Updating"}
    assert statuses.states("layering/rollout/nonprod") == ["pending"]
    assert queue.sent == [tasks.WatchRollout(PUSHED, "nonprod", "nonprod", NOW).call()]
    assert [record.phase for record in store.rollouts] == ["Updating"]
    assert store.proven == {}


def test_an_updated_pool_verifies_the_digest_and_rechecks_the_gates() -> None:
    store = Store()
    store.watch_gate(gate.WatchedGate("7" * 40, "prod", 3))
    phases, statuses, queue = watch([UPDATING, UPDATED], started_at=NOW - 60, store=store)
    assert phases == {"worker": "Updated"}
    assert statuses.states("layering/rollout/nonprod") == ["pending", "success"]
    assert store.proven[("nonprod", DIGEST)].healthy
    assert queue.sent == [tasks.Gate("7" * 40, "prod", 3).call()]


def test_in_pull_request_mode_an_updated_pool_opens_the_next_environments_promotion() -> None:
    # prod promotes from nonprod: once nonprod runs the digest healthy, prod's promotion pull
    # request is prepared (flows/downstream.py); it waits there for the soak if need be
    store = Store()
    _, _, queue = watch([UPDATED], started_at=NOW - 60, store=store, downstream=True)
    assert tasks.PromoteDownstream("prod", "nonprod").call() in queue.sent
    _, _, queue = watch([UPDATED], started_at=NOW - 60, store=Store(), downstream=False)
    assert not any(call.name == tasks.PromoteDownstream.NAME for call in queue.sent)
    _, _, queue = watch([DEGRADED], started_at=NOW - 60, store=Store(), downstream=True)
    assert not any(call.name == tasks.PromoteDownstream.NAME for call in queue.sent)


def test_a_degraded_pool_fails_the_digest() -> None:
    store = Store()
    phases, statuses, _ = watch([UPDATING, DEGRADED], started_at=NOW - 60, store=store)
    assert phases == {"worker": "Degraded"}
    assert statuses.states("layering/rollout/nonprod") == ["pending", "failure"]
    assert store.proven[("nonprod", DIGEST)].message == "NodeDegraded: boot failed"
    assert not store.proven[("nonprod", DIGEST)].healthy


def test_the_rollout_timeout_fails_the_digest() -> None:
    store = Store()
    phases, statuses, queue = watch([UPDATING], started_at=NOW - 3600, store=store)
    assert phases == {"worker": "Updating"}
    ((_, first), (_, last)) = statuses.reported
    assert (first.state, last.state) == ("pending", "failure")
    assert last.description == "rollout timed out after 1h: worker at 1/2 machines updated"
    assert not store.proven[("nonprod", DIGEST)].healthy
    assert queue.sent == []  # no watched gate


# -- base drift -----------------------------------------------------------------------------


def test_drift_of_every_kube_cluster_one_unreadable_hides_no_other() -> None:
    store = Store()
    newer = BASE.replace("a" * 64, "e" * 64)
    drifted = drift_flow.run(
        default_branch="main",
        branches=Branches(repository()),
        clusters=Clusters({"nonprod-admin": Reader([], drift.BaseImage(newer, "4.16.9"))}),
        store=store,
        now=clock(),
    )
    assert drifted == {"nonprod": True, "prod": False}
    assert store.drifts["nonprod"].actual == newer
    assert "'prod-admin'" in store.drifts["prod"].error


# -- auto-merge of the service's own promotion pull request ---------------------------------


@dataclass
class Requests:
    """ports.PromotionRequests: the merges asked for."""

    merged: list[tuple[int, str]] = field(default_factory=list)

    def merge(self, number: int, *, head_sha: str) -> bool:
        self.merged.append((number, head_sha))
        return True

    def close(self, environment: str, *, reason: str) -> None:
        raise AssertionError("the gate never closes a pull request")


@dataclass
class Waits:
    """ports.PromotionWaits: only the post-push records the gate reads."""

    records: list[post_push.PostPush] = field(default_factory=list)

    def post_pushes(self, environment: str | None = None) -> list[post_push.PostPush]:
        return [r for r in self.records if environment in (None, r.environment)]


def auto_merging() -> repo.Repository:
    """repository() with prod allowing auto-merge (`autoMerge: true` in its cluster.yaml)."""
    document = yamlfile.load(cluster_yaml("prod", kube=True, promotes_from="nonprod", soak="1h"))
    document["autoMerge"] = True
    files = {
        "images/firewalld/Containerfile": b"FROM x\n",
        "clusters/nonprod/cluster.yaml": cluster_yaml("nonprod", kube=True),
        "clusters/prod/cluster.yaml": yamlfile.dump(document),
    }
    return repo.parse_files(files, {"firewalld": TREE})


OURS = post_push.PostPush("prod", HEAD, "4" * 40, (), (), commit_sha=HEAD, pull_request=12)


@pytest.mark.parametrize(
    ("head_ref", "records", "rules", "merged"),
    [
        ("layering/promote/prod", [OURS], auto_merging, [(12, HEAD)]),
        ("layering/promote/prod", [OURS], repository, []),  # prod's default: no auto-merge
        ("feature/x", [OURS], auto_merging, []),  # not a promotion branch
        ("", [OURS], auto_merging, []),  # a fork's branch name is never passed on
        ("layering/promote/prod", [], auto_merging, []),  # named like ours, not opened by us
        (
            "layering/promote/prod",
            [
                post_push.PostPush(
                    "prod", HEAD, "4" * 40, (), (), commit_sha="9" * 40, pull_request=12
                )
            ],
            auto_merging,
            [],
        ),  # ours, but its head moved since the service pushed it
    ],
    ids=["ours-allowed", "not-allowed", "other-branch", "fork", "not-ours", "head-moved"],
)
def test_a_green_promotion_pull_request_is_merged_only_when_ours_and_allowed(
    head_ref: str,
    records: list[post_push.PostPush],
    rules: Callable[[], repo.Repository],
    merged: list[tuple[int, str]],
) -> None:
    statuses, queue, store = Statuses(), Queue(), Store()
    proven_long_ago(store)
    requests = Requests()
    outcome = gate_flow.run(
        HEAD,
        "prod",
        12,
        branches=Branches(rules(), gate.MergeResult(rules(), "6" * 40, source="computed")),
        sources=sources(store, readers={"nonprod-admin": Reader([UPDATED])}),
        reporter=statuses,
        queue=queue,
        now=clock(),
        head_ref=head_ref,
        requests=requests,
        waits=Waits(records),
    )
    assert outcome["state"] == "success"
    assert requests.merged == merged
    assert outcome["auto_merged"] is bool(merged)
