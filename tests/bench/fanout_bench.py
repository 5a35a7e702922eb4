"""Scale-out of one base bump (issue 12, item 5): one cluster with N images (40) whose
cluster.yaml gets a new base digest, built by W build workers (2) of concurrency C (2) each.

Everything is real: redis-server, docker-registry, two stand-in base images pushed to it (the
bump goes from one digest to the other), a bare Git origin holding images/<name>/Containerfile
(one RUN line each) and clusters/dev/cluster.yaml, the webhook receiver over HTTP, an events
worker (queues events, promotions: plan, lint, enqueue, statuses, build reports) and W prefork
build workers (queue builds), the GitHub API stand-in taking the statuses. The bump is pushed
to the origin, then its push delivery is POSTed to the receiver, as GitHub would.

Storage: the driver the product picks (LAYERING_BUILDAH_STORAGE_DRIVER=auto: overlay where the
host allows it; `--driver` overrides), one private buildah root per build worker: a worker is a
pod with its own emptyDir in deploy/, so each worker pulls the new base once and its C processes
share that root (containers/storage's locks), as they do there. The driver used is read back
from the buildah command lines the workers ran.

Figures come from the build records (created_at = queued, started_at = buildah starts after the
checkout and the registry check, finished_at), the event time from this process's clock (the
same host's), and which worker ran each build from the workers' own logs. Prints figures and
ratios; asserts nothing about time. Stops by itself (BUILD_DEADLINE_SECONDS); every process is
stopped by PID and the temporary directory removed.

    .venv/bin/python tests/bench/fanout_bench.py [--images 40] [--workers 2] [--concurrency 2]
        [--driver auto] [--sleep SECONDS] [--keep]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
from pytest_httpserver import HTTPServer

from pipeline.adapters import build_records, standin
from pipeline.core import builds
from pipeline.web import server as web
from tests import receiver, services
from tests.plugins import builds as fixtures
from tests.plugins.github import GitHubStandIn, load_operations
from tests.plugins.gitrepos import GitopsRepo

SECRET = "fanout-bench-webhook-secret"
FULL_NAME = "acme/layers"
CLUSTER = "dev"
BUILD_DEADLINE_SECONDS = 900.0
TARGETS = "targets: makespan <= 1.2x ideal; event -> first build start < 1 s"


@dataclass(frozen=True)
class Setup:
    images: int
    workers: int
    concurrency: int
    driver: str
    sleep: float = 0.0  # seconds each RUN step sleeps: longer builds, the same fixed costs


def main(setup: Setup, *, keep: bool = False) -> None:
    missing = services.tool_missing("buildah", "skopeo", "redis-server", "docker-registry", "git")
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (run `make setup`)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per status otherwise
    root = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    started: list[fixtures.Worker] = []
    redis_server = services.RedisServer(root / "redis").start()
    registry = services.Registry(root / "registry").start()
    github_server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    github_server.start()
    http: receiver.ThreadedServer | None = None
    gitops: GitopsRepo | None = None
    try:
        os.environ["CONTAINERS_REGISTRIES_CONF"] = str(registry.registries_conf)
        old_base, new_base = push_bases(root, registry)
        github = GitHubStandIn(github_server, load_operations())
        gitops = GitopsRepo(root / "gitops", root / "origin.git")
        commits = seed_and_bump(gitops, setup, registry, old_base, new_base)
        env = fixtures.make_worker_env(
            root / "worker",
            redis_url=redis_server.url,
            registry=registry,
            storage=fixtures.BuildahStorage(root / "unused-root", root / "unused-run"),
        )
        service = {
            "LAYERING_REPO_URL": gitops.origin.as_uri(),
            "LAYERING_GITHUB_REPOSITORY": FULL_NAME,
            "LAYERING_GITHUB_API_URL": github.url,
            "LAYERING_PUBLIC_URL": "http://layering.example.test",
            "LAYERING_WEBHOOK_SECRET": SECRET,
            "LAYERING_WORKDIR": str(root / "workdir"),  # one host: one mirror for all workers
        }
        events = fixtures.launch_worker(
            env, "events", concurrency=2, queues="events,promotions", extra_env=service
        )
        started.append(events)
        for number in range(setup.workers):
            storage = root / f"storage-{number}"
            extra = {
                **service,
                "LAYERING_BUILDAH_STORAGE_DRIVER": setup.driver,
                "LAYERING_BUILDAH_ROOT": str(storage / "root"),
                "LAYERING_BUILDAH_RUNROOT": str(storage / "run"),
            }
            started.append(
                fixtures.launch_worker(
                    env,
                    f"build{number}",
                    concurrency=setup.concurrency,
                    queues="builds",
                    extra_env=extra,
                )
            )
        http = receiver.ThreadedServer(web.service_app(events.settings)).start()
        rounds = (
            (
                "first event after start (mirror cloned, old base pulled): 40 new images",
                commits[:2],
            ),
            ("the base bump (warm service, new base pulled)", commits[1:]),
        )
        for label, (before, after) in rounds:
            event_at, answered_at = deliver(http.url, gitops, before, after)
            records = wait_for_builds(env, after, setup.images, started)
            print(f"\n== {label.replace('40', str(setup.images))}")
            report(setup, records, event_at, answered_at, started, driver_used(env))
        print(f"\n{TARGETS}")
        if github.errors:
            print("requests the GitHub API would refuse:\n" + "\n".join(github.errors))
    finally:
        if http is not None:
            http.stop()
        for worker in started:
            worker.stop()
        github_server.clear()
        github_server.stop()
        registry.stop()
        redis_server.stop()
        if gitops is not None:
            gitops.repo.close()
        subprocess.run(["chmod", "-R", "u+w", str(root)], check=False)
        cleanup_storage(root)
        if keep:
            print(f"kept {root} (logs: {root / 'worker'})")
        else:
            shutil.rmtree(root, ignore_errors=True)


def push_bases(root: Path, registry: services.Registry) -> tuple[standin.BaseImage, ...]:
    """Two stand-in bases (each build has its own file times and creation date, so its own
    digest) under one repository: the cluster runs the first, the bump moves it to the
    second."""
    storage = fixtures.BuildahStorage(root / "base-storage" / "root", root / "base-storage" / "run")
    bases = tuple(
        fixtures.push_base_image(root / f"base-{tag}", registry=registry, storage=storage, env={})
        for tag in ("old", "new")
    )
    if bases[0].digest == bases[1].digest:
        raise RuntimeError("the two stand-in bases have one digest: nothing to bump")
    return bases


def seed_and_bump(
    gitops: GitopsRepo,
    setup: Setup,
    registry: services.Registry,
    old: standin.BaseImage,
    new: standin.BaseImage,
) -> tuple[str, str, str]:
    """Three commits pushed to the origin: a root (a README), the seed (`setup.images` images
    on cluster dev, on the old base), the base bump; returns their shas."""
    gitops.write("README.md", "fan-out bench\n")
    first = gitops.commit("root")
    names = [f"image{number:02d}" for number in range(setup.images)]
    pause = f"sleep {setup.sleep:g} && " if setup.sleep else ""
    for name in names:
        gitops.write(
            f"images/{name}/Containerfile",
            f"FROM {old.repository}\n"
            f"RUN echo {name} > /etc/{name} && {pause}ostree container commit\n",
        )
    cluster = {
        "environment": "nonprod",
        "baseImage": old.ref,
        "registry": f"{registry.host}/fanout",
        "pools": {f"pool{number:02d}": name for number, name in enumerate(names)},
    }
    gitops.write(f"clusters/{CLUSTER}/cluster.yaml", json.dumps(cluster, indent=2) + "\n")
    seed = gitops.commit("seed")
    gitops.update_cluster(CLUSTER, baseImage=new.ref)
    bump = gitops.commit("bump the base image")
    gitops.push()
    return first, seed, bump


def deliver(url: str, gitops: GitopsRepo, before: str, after: str) -> tuple[float, float]:
    """POST the push delivery of before..after to the receiver; returns (sent, answered)."""
    payload = receiver.push_payload(
        full_name=FULL_NAME,
        clone_url=gitops.origin.as_uri(),
        ref="refs/heads/main",
        before=before,
        after=after,
    )
    body, headers = receiver.delivery(SECRET.encode(), "push", payload)
    sent = time.time()
    answer = httpx.post(f"{url}/webhook/github", content=body, headers=headers, timeout=30)
    answered = time.time()
    if answer.status_code != 202:
        raise RuntimeError(f"receiver answered {answer.status_code}: {answer.text}")
    return sent, answered


def wait_for_builds(
    env: fixtures.WorkerEnv, sha: str, count: int, workers: list[fixtures.Worker]
) -> list[builds.BuildRecord]:
    """The records of `sha`'s builds once all `count` are finished (bounded)."""
    store = build_records.BuildStore.from_settings(env.settings())
    deadline = time.monotonic() + BUILD_DEADLINE_SECONDS
    try:
        while time.monotonic() < deadline:
            mine = [r for r in store.recent(limit=count * 4) if r.commit_sha == sha]
            if len(mine) >= count and all(r.state.terminal for r in mine):
                return mine
            for worker in workers:
                if worker.process.poll() is not None:
                    raise RuntimeError(f"{worker.name} exited: {worker.log.read_text()[-3000:]}")
            time.sleep(0.1)
        states = Counter(r.state.value for r in store.recent(limit=count * 4))
        raise TimeoutError(f"builds unfinished after {BUILD_DEADLINE_SECONDS:.0f} s: {states}")
    finally:
        store.client.close()


@dataclass(frozen=True)
class Ran:
    """What a worker's log says of one build task."""

    worker: str
    runtime: float | None  # Celery's "succeeded in": the whole task, checkout to report


RECEIVED = re.compile(r"Task layering\.build\[build-([^\]]+)\] received")
SUCCEEDED = re.compile(r"Task layering\.build\[build-([^\]]+)\] succeeded in ([0-9.]+)s")


def ran_on(workers: list[fixtures.Worker]) -> dict[str, Ran]:
    """Build id -> the worker whose log says it received "layering.build" for it (late acks:
    a worker that received a build runs it, unless it dies; the last receipt wins), with the
    task's runtime once logged."""
    found: dict[str, Ran] = {}
    for worker in workers:
        text = worker.log.read_text(errors="replace")
        runtimes = {m.group(1): float(m.group(2)) for m in SUCCEEDED.finditer(text)}
        for match in RECEIVED.finditer(text):
            found[match.group(1)] = Ran(worker.name, runtimes.get(match.group(1)))
    return found


def report(
    setup: Setup,
    records: list[builds.BuildRecord],
    event_at: float,
    answered_at: float,
    workers: list[fixtures.Worker],
    driver: str,
) -> None:
    states = Counter(r.state.value for r in records)
    ran = [r for r in records if r.started_at is not None and r.finished_at is not None]
    slots = setup.workers * setup.concurrency
    durations = [float(r.finished_at or 0) - float(r.started_at or 0) for r in ran]
    total = sum(durations)
    ideal = total / slots
    first_start = min(float(r.started_at or 0) for r in ran)
    last_finish = max(float(r.finished_at or 0) for r in ran)
    first_queued = min(r.created_at for r in records)
    last_queued = max(r.created_at for r in records)
    makespan = last_finish - first_start
    overall = last_finish - event_at
    waits = [float(r.started_at or 0) - r.created_at for r in ran]
    time.sleep(0.5)  # the log line of the last task follows its record
    owners = ran_on(workers)
    per_worker = Counter(owners[r.id].worker if r.id in owners else "unknown" for r in records)
    outside = [
        run - (float(r.finished_at or 0) - float(r.started_at or 0))
        for r in ran
        if r.id in owners and (run := owners[r.id].runtime) is not None
    ]
    print(
        f"fan-out of one base bump: {setup.images} images, {setup.workers} workers x "
        f"concurrency {setup.concurrency} (storage driver {driver}, a buildah root per worker)"
    )
    print(f"builds: {len(records)} {dict(states)}")
    print(
        f"build durations (started -> finished): sum {total:.2f} s, mean "
        f"{total / len(ran):.2f} s, min {min(durations):.2f} s, max {max(durations):.2f} s"
    )
    print(f"slots: {slots}; ideal makespan = sum / slots = {ideal:.2f} s")
    print(
        f"actual makespan, first start -> last finish: {makespan:.2f} s, "
        f"ratio {makespan / ideal:.2f}x"
    )
    print(f"event -> last finish: {overall:.2f} s, ratio {overall / ideal:.2f}x")
    print(f"latency event -> first build start: {first_start - event_at:.3f} s")
    print(
        f"  event -> receiver's 202: {answered_at - event_at:.3f} s; event -> first record "
        f"queued: {first_queued - event_at:.3f} s; -> last queued: {last_queued - event_at:.3f} s"
    )
    first = min(ran, key=lambda r: r.created_at)
    print(
        f"  queued -> started per build: min {min(waits):.3f} s, "
        f"first build's {float(first.started_at or 0) - first.created_at:.3f} s"
    )
    if outside:
        print(
            f"  per build, task time outside started -> finished (checkout, registry check, "
            f"records, image removal; from the worker logs): mean {sum(outside) / len(outside):.3f}"
            f" s, max {max(outside):.3f} s"
        )
    print("per worker: " + ", ".join(f"{name} {n}" for name, n in sorted(per_worker.items())))


def driver_used(env: fixtures.WorkerEnv) -> str:
    """The --storage-driver of the workers' `buildah build` command lines."""
    drivers = {
        match.group(1)
        for line in env.buildah_calls()
        if " build " in line and (match := re.search(r"--storage-driver (\S+)", line))
    }
    return "/".join(sorted(drivers)) or "unknown"


def cleanup_storage(root: Path) -> None:
    """Overlay storage leaves mounts behind only if buildah was killed mid-build; unmount
    what is still mounted under `root` so the directory can be removed."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    for line in reversed(mounts):
        target = line.split()[1]
        if target.startswith(str(root)):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--driver", default="auto", help="LAYERING_BUILDAH_STORAGE_DRIVER")
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds each RUN step sleeps")
    parser.add_argument("--keep", action="store_true", help="keep the directory and its logs")
    options = parser.parse_args()
    setup = Setup(
        options.images, options.workers, options.concurrency, options.driver, options.sleep
    )
    main(setup, keep=options.keep)
