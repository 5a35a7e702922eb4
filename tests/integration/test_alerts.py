"""Issue 16, item 5: alerts and scraping for OpenShift monitoring. The ServiceMonitor and the
PrometheusRule of deploy/components/monitoring, rendered by kubectl in the openshift overlay,
validate against the Prometheus Operator's CRDs (tests/fixtures, SOURCES.md); Debian's promtool
checks the rules and runs their unit tests (tests/fixtures/monitoring_rules_test.yaml); and every
metric an alert names is in the /metrics of a real `layering serve` on a real redis-server, after
the adapters the workers use wrote what each figure is read from."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline.adapters import (
    build_records,
    event_metrics,
    parked_statuses,
    poison,
    promotion_store,
    promotion_waits,
    queue,
)
from pipeline.core import builds, commit_status, drift, reconcile, rollout, tasks, verification
from pipeline.core.poison import ParkedTask
from pipeline.core.settings import Settings
from pipeline.flows import head as head_flow
from pipeline.flows import poison as poison_flow
from tests import crd, manifests, services
from tests.conftest import REPO_ROOT, require_tools
from tests.manifests import Obj, named

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "tests" / "fixtures"
KEY = b"0123456789abcdef" * 4
BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:"
# PromQL words that are not metric names (the aggregations and functions are followed by "(")
KEYWORDS = {"by", "without", "and", "or", "unless", "on", "ignoring", "bool", "offset"}
KEYWORDS |= {"group_left", "group_right"}


@pytest.fixture(scope="module")
def openshift() -> list[Obj]:
    return manifests.render(manifests.DEPLOY / "overlays" / "openshift")


@pytest.fixture(scope="module")
def rule(openshift: list[Obj]) -> Obj:
    return named(openshift, "PrometheusRule", "layering-alerts")


def alerts(rule: Obj) -> dict[str, Obj]:
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside label matchers, ranges
    and grouping clauses that are neither keywords nor called as functions."""
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    return {
        found.group()
        for found in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text)
        if found.group() not in KEYWORDS and not text[found.end() :].lstrip().startswith("(")
    }


def promtool(*args: str, cwd: Path) -> str:
    require_tools("promtool")
    result = subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def test_the_monitoring_objects_validate_against_their_crds(openshift: list[Obj]) -> None:
    monitor = named(openshift, "ServiceMonitor", "layering-web")
    rule = named(openshift, "PrometheusRule", "layering-alerts")
    assert crd.errors("monitoring.coreos.com_servicemonitors.yaml", monitor) == []
    assert crd.errors("monitoring.coreos.com_prometheusrules.yaml", rule) == []
    # the schemas are the real ones: they refuse what the API server refuses
    broken = yaml.safe_load(yaml.safe_dump(rule))
    broken["spec"]["groups"][0]["rules"][0]["for"] = "15 minutes"
    assert any(
        "for" in error for error in crd.errors("monitoring.coreos.com_prometheusrules.yaml", broken)
    )
    assert len(alerts(rule)) == 6
    for name, alert in alerts(rule).items():
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description"} <= alert["annotations"].keys(), name


def test_the_service_monitor_scrapes_metrics_through_oauth_proxy(openshift: list[Obj]) -> None:
    (endpoint,) = named(openshift, "ServiceMonitor", "layering-web")["spec"]["endpoints"]
    service = named(openshift, "Service", "layering-web")
    selector = named(openshift, "ServiceMonitor", "layering-web")["spec"]["selector"]
    assert selector["matchLabels"].items() <= service["metadata"]["labels"].items()
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    proxy = manifests.container(openshift, "layering-web", "oauth-proxy")
    assert port["targetPort"] in {p["name"] for p in proxy["ports"]}
    assert (endpoint["path"], endpoint["scheme"]) == ("/metrics", "https")
    # the proxy lets a bearer token through when its owner may get the Service (delegate URLs)
    delegated = [a for a in proxy["args"] if a.startswith("--openshift-delegate-urls=")]
    assert '"resource":"services","resourceName":"layering-web","verb":"get"' in delegated[0]
    token = endpoint["authorization"]["credentials"]
    secret = named(openshift, "Secret", token["name"])
    assert secret["type"] == "kubernetes.io/service-account-token"
    account = secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
    binding = named(openshift, "RoleBinding", "layering-metrics-reader")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": "layering"}
    ]
    role = named(openshift, "Role", binding["roleRef"]["name"])
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["services"],
            "resourceNames": ["layering-web"],
            "verbs": ["get"],
        }
    ]
    ca = endpoint["tlsConfig"]["ca"]["configMap"]
    bundle = named(openshift, "ConfigMap", ca["name"])
    assert bundle["metadata"]["annotations"]["service.beta.openshift.io/inject-cabundle"] == "true"
    assert ca["key"] == "service-ca.crt"
    assert endpoint["tlsConfig"]["serverName"] == "layering-web.layering.svc"


def test_plain_kubernetes_ships_no_monitoring_objects() -> None:
    # the Prometheus Operator's CRDs may be missing there: the component is opt-in
    overlay = manifests.DEPLOY / "overlays" / "kubernetes" / "kustomization.yaml"
    assert "components/monitoring" not in str(yaml.safe_load(overlay.read_text()))


def test_promtool_checks_the_rules_and_runs_their_tests(rule: Obj, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    # the unit tests expect summaries only: descriptions are prose that check rules parsed
    groups = yaml.safe_load(yaml.safe_dump(rule["spec"]["groups"]))
    for group in groups:
        for alert in group["rules"]:
            del alert["annotations"]["description"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(FIXTURES / "monitoring_rules_test.yaml", tmp_path / "rules_test.yaml")
    promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)
    tested = set(re.findall(r"alertname: (\w+)", (tmp_path / "rules_test.yaml").read_text()))
    assert tested == set(alerts(rule))


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, redis.Redis[bytes]]]:
    """/metrics of a real `layering serve` once the workers' adapters wrote one of everything
    the alerts read; and the Redis client, for what the adapters keep."""
    require_tools("redis-server")
    directory = tmp_path_factory.mktemp("alerts")
    server = services.RedisServer(directory / "redis").start()
    client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
    try:
        record_one_of_everything(client, server.url)
        port = services.free_port()
        env = {
            **os.environ,
            "LAYERING_WEBHOOK_SECRET": "alerts-webhook-secret",
            "LAYERING_REDIS_URL": server.url,
            "LAYERING_GITHUB_REPOSITORY": "acme/layers",
            "LAYERING_WORKDIR": str(directory / "work"),
            "LAYERING_VERIFICATION_KEY": KEY.decode(),
        }
        argv = [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)]
        log = directory / "serve.log"
        process = services.start(argv, log=log, env=env, cwd=REPO_ROOT)
        try:
            services.wait_for_port(port, process=process)
            answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        finally:
            services.stop_process(process)
        assert answer.status_code == 200, log.read_text()[-2000:]
        yield answer.text, client
    finally:
        client.close()
        server.stop()


NOW = time.time()
DRIFTED_AT = NOW - 7200
WAITING_SINCE = NOW - 600


class Statuses:
    """The StatusReporter port: what a build's end posts on its commit is not read here."""

    def report(self, sha: str, status: commit_status.Status) -> None:
        pass


CREATED = NOW - 60


def end_builds(client: redis.Redis[bytes]) -> None:
    """A build ended each way a record turns finished, by the code that ends it; each is saved
    through the BuildStore, which counts it once (layering_build_duration_seconds)."""
    store = build_records.BuildStore(client, retention_seconds=3600, lock_timeout_seconds=60)
    settings = Settings(public_url="http://layering.example.test")

    def running(build_id: str) -> builds.BuildRecord:
        record = builds.queued(build_id, image="chrony", cluster="prod", now=CREATED)
        store.save(started := builds.start(record, now=CREATED + 1))
        return started

    def crashed(build_id: str) -> None:
        """The build task's `link_error` (its worker raised, or its time limit killed it)."""
        where = {"sha": "5" * 40, "image": "chrony", "cluster": "prod", "build_id": build_id}
        head_flow.report_build_error(Statuses(), store, settings, now=lambda: NOW, **where)

    # flows/build.py fails it (42 s); when it then raises (a bug), the callback finds it failed
    store.save(builds.fail(running("failed-by-the-build"), error="RUN false", now=CREATED + 42))
    crashed("failed-by-the-build")
    # the task raised before the build ran, or was killed: the callback fails it (60 s)
    running("crashed")
    crashed("crashed")
    # its worker kept dying: parked (flows/poison.py) fails it (60 s)
    running("poisoned")
    arguments = {"commit_sha": "6" * 40, "image": "chrony", "cluster": "prod"}
    parked = ParkedTask(
        "t-1", tasks.Build.NAME, (), {**arguments, "build_id": "poisoned"}, 0, 4, NOW
    )
    store_of_parked = poison.PoisonStore(client, ttl_seconds=3600, keep_seconds=3600)
    poison_flow.park(
        parked, store=store_of_parked, statuses=Statuses(), records=store, public_url="", now=NOW
    )
    # succeeded, then saved again with its image changes (flows/build_changes.py): counted once
    succeeded = builds.succeed(running("succeeded"), digest="sha256:" + "d" * 64, now=CREATED + 30)
    store.save(succeeded)
    store.save(dataclasses.replace(succeeded, changes={"packages": []}))
    # cancelled: superseded, not finished
    store.save(builds.cancel(running("cancelled"), now=NOW, reason="superseded"))


def record_one_of_everything(client: redis.Redis[bytes], url: str) -> None:
    """What the workers write, through the adapters they write it with."""
    end_builds(client)
    event_metrics.RedisEventMetrics(client).queue_latency(0.2)
    store = promotion_store.PromotionStore(client, key=KEY)
    base = drift.Drift("prod", BASE + "a" * 64, BASE + "b" * 64, "4.20.1", DRIFTED_AT)
    store.record_drift(base)
    store.record_drift(drift.Drift("nonprod", BASE + "a" * 64, BASE + "a" * 64, "4.20.1", NOW))
    digest = "sha256:" + "c" * 64
    url_of = f"registry.example/firewalld@{digest}"
    store.record_promoted(
        verification.Promoted("prod", "worker", "firewalld", digest, url_of, "k", "1" * 40, NOW)
    )
    degraded = rollout.RolloutState(rollout.Phase.DEGRADED, 1, 3, "NodeDegraded: disk full")
    store.record_rollout(
        rollout.record(
            degraded,
            cluster="prod",
            pool="worker",
            commit_sha="2" * 40,
            os_image_url=url_of,
            observed_at=NOW,
        )
    )
    waits = promotion_waits.PromotionWaits(client)
    wait = reconcile.EnvironmentWait(
        "prod", "3" * 40, due=NOW + 60, recorded_at=WAITING_SINCE, soak_seconds=3600
    )
    waits.record_wait(wait)
    # the sweep records it again later: it keeps when it began
    waits.record_wait(reconcile.swept(wait, now=NOW, interval=300))
    parked = commit_status.ParkedStatus(
        "4" * 40, "layering/lint", "failure", "LAY001", None, seq=1, parked_at=NOW
    )
    assert parked_statuses.ParkedStatuses(client, keep_seconds=3600).park(parked, due=NOW)
    message = queue.TaskMessage("layering.handle_push", tasks.EVENTS_QUEUE, [], "task-1")

    async def enqueue() -> None:
        enqueuer = queue.Enqueuer(url)
        try:
            await enqueuer.enqueue_once(None, 0, message)
        finally:
            await enqueuer.close()

    asyncio.run(enqueue())


def samples(text: str) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    found: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(sample.labels.items())
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def test_every_metric_an_alert_names_is_in_a_real_scrape(
    rule: Obj, scraped: tuple[str, redis.Redis[bytes]]
) -> None:
    exported = samples(scraped[0])
    named_in_alerts = {name: metric_names(alert["expr"]) for name, alert in alerts(rule).items()}
    assert all(named_in_alerts.values()), named_in_alerts
    for name, metrics in named_in_alerts.items():
        assert metrics <= exported.keys(), f"{name}: {metrics - exported.keys()} not in /metrics"


def test_the_scrape_follows_prometheus_naming_conventions(
    scraped: tuple[str, redis.Redis[bytes]], tmp_path: Path
) -> None:
    # promtool's lint: units in names, counters ending in _total, no reserved suffixes
    require_tools("promtool")
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=scraped[0],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_scrape_shows_what_the_workers_recorded(
    scraped: tuple[str, redis.Redis[bytes]],
) -> None:
    exported = samples(scraped[0])

    def value(name: str, **labels: str) -> float:
        return exported[name][frozenset(labels.items())]

    # each build ended once, whichever path ended it
    assert value("layering_build_duration_seconds_count", outcome="failed") == 3
    failed_seconds = value("layering_build_duration_seconds_sum", outcome="failed")
    assert failed_seconds == pytest.approx(42 + 60 + 60)
    assert value("layering_build_duration_seconds_count", outcome="succeeded") == 1
    assert value("layering_build_duration_seconds_sum", outcome="succeeded") == pytest.approx(30)
    assert "cancelled" not in str(exported["layering_build_duration_seconds_count"])
    # zero before their first build: rate() sees the first one
    assert value("layering_build_duration_seconds_count", outcome="skipped") == 0
    assert value("layering_queue_latency_seconds_count", queue="events") == 1
    assert value("layering_queue_latency_seconds_bucket", queue="events", le="0.25") == 1
    assert value("layering_base_drift_since_timestamp_seconds", cluster="prod") == DRIFTED_AT
    assert "nonprod" not in str(exported["layering_base_drift_since_timestamp_seconds"])
    assert value("layering_rollout_degraded", cluster="prod", pool="worker") == 1
    assert value("layering_rollout_machines", cluster="prod", pool="worker") == 3
    assert value("layering_rollout_updated_machines", cluster="prod", pool="worker") == 1
    pending = {"environment": "prod", "upstream": ""}
    assert value("layering_promotion_pending_since_timestamp_seconds", **pending) == WAITING_SINCE
    assert value("layering_promotion_soak_seconds", **pending) == 3600
    assert value("layering_parked_statuses") == 1
    assert value("layering_queue_messages", queue="events") == 1
    assert value("layering_queue_messages", queue="builds") == 0


def test_since_timestamps_end_with_what_they_track(
    scraped: tuple[str, redis.Redis[bytes]],
) -> None:
    client = scraped[1]
    store = promotion_store.PromotionStore(client, key=KEY)
    # drift found again (another base): still the same unresolved drift
    store.record_drift(drift.Drift("prod", BASE + "a" * 64, BASE + "d" * 64, "4.20.2", NOW))
    assert store.drift_since() == {"prod": DRIFTED_AT}
    # unreadable: unknown, not resolved
    store.record_drift(
        drift.Drift("prod", BASE + "a" * 64, "", "", NOW, error="connection refused")
    )
    assert store.drift_since() == {"prod": DRIFTED_AT}
    store.record_drift(drift.Drift("prod", BASE + "a" * 64, BASE + "a" * 64, "4.20.2", NOW))
    assert store.drift_since() == {}
    waits = promotion_waits.PromotionWaits(client)
    assert waits.pending_since() == {"prod": WAITING_SINCE}
    waits.clear_wait("prod")
    assert (waits.waits(), waits.pending_since()) == ([], {})
