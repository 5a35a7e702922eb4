"""deploy/: both kustomize overlays render with the real kubectl, every object is valid against
its schema (Kubernetes' own for core kinds at the version OpenShift 4.20 runs, the CRDs copied
into tests/fixtures for Route, SCC, ScaledObject, TriggerAuthentication, ServiceMonitor and
PrometheusRule), and the rendered objects keep the rules: images by digest, no privileged
container, requests and limits everywhere, RBAC exactly as listed here, one beat, probes on
/healthz and /readyz, KEDA on the builds queue, settings that exist, and no secret on an argv
or in the repository."""

from __future__ import annotations

import os
import re
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from pipeline.adapters import kube
from pipeline.core import tasks
from tests import crd, manifests
from tests.manifests import OVERLAYS, Obj, container, containers, env, named, pod_specs

KUBERNETES_VERSION = "1.33.0"  # OpenShift 4.20
CRDS = crd.BY_KIND
DIGEST = re.compile(r"^[a-z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9._-]+)+@sha256:[0-9a-f]{64}$")
# the service image as shipped: a placeholder your own overlay replaces (README)
PLACEHOLDER = "coreos-layering-pipeline@sha256:" + "0" * 64
# The one documented exception to "no added capability" (deploy/base/builds-worker.yaml and
# README "Deploy on OpenShift"): buildah as root inside a pod-level user namespace.
BUILDAH_CAPABILITIES = {
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETFCAP", "SETGID", "SETUID", "SYS_CHROOT",
    "SYS_ADMIN",
}  # fmt: skip
ADDED_CAPABILITIES = {("layering-builds", "worker"): BUILDAH_CAPABILITIES}
# Every rule the service is granted: (kind, name, namespace) -> (group, resource, names, verbs)
RBAC = {
    ("ClusterRole", "layering-mco-reader", None): [
        (kube.GROUP, kube.POOLS, (), ("get", "list", "watch")),
        (kube.GROUP, kube.MACHINECONFIGS, (), ("get",)),
    ],
    ("Role", "layering-osimageurl-reader", kube.MCO_NAMESPACE): [
        ("", "configmaps", (kube.OSIMAGEURL_CONFIGMAP,), ("get",)),
    ],
    ("Role", "layering-buildah-scc", "layering"): [
        ("security.openshift.io", "securitycontextconstraints", ("layering-buildah",), ("use",)),
    ],
    # what oauth-proxy asks of a bearer token on /metrics (components/monitoring)
    ("Role", "layering-metrics-reader", "layering"): [
        ("", "services", ("layering-web",), ("get",)),
    ],
}
BINDINGS = {  # role -> the service accounts bound to it
    "layering-mco-reader": ["layering-events"],
    "layering-osimageurl-reader": ["layering-events"],
    "layering-buildah-scc": ["layering-builds"],
    "system:auth-delegator": ["layering-web"],
    "layering-metrics-reader": ["layering-metrics-reader"],
}
SECRETS = {  # referenced, never shipped: README "Deploy on OpenShift" says how to create each
    "layering-webhook", "layering-redis", "layering-verification-key", "layering-github-app",
    "layering-registry-auth", "layering-signing-key", "layering-web-tls",
    "layering-web-proxy-session",
}  # fmt: skip


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[Obj]:
    return manifests.render(manifests.DEPLOY / "overlays" / str(request.param))


@pytest.fixture(scope="module")
def openshift() -> list[Obj]:
    return manifests.render(manifests.DEPLOY / "overlays" / "openshift")


def test_core_kinds_are_valid_kubernetes(rendered: list[Obj]) -> None:
    core = [o for o in rendered if o["kind"] not in CRDS]
    assert {o["kind"] for o in core} >= {"Deployment", "StatefulSet", "Service", "ConfigMap"}
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validate_refuses_a_broken_object() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}
    deployment["spec"] = {"replicas": "two", "selector": {}, "template": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_custom_kinds_are_valid_against_their_crds(rendered: list[Obj]) -> None:
    custom = [o for o in rendered if o["kind"] in CRDS]
    assert {"ScaledObject", "TriggerAuthentication"} <= {o["kind"] for o in custom}
    for obj in custom:
        assert crd.errors(CRDS[obj["kind"]], obj) == [], obj["metadata"]["name"]


def test_the_crd_schemas_refuse_what_the_api_server_refuses() -> None:
    route = {"apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "r"}}
    route["spec"] = {"to": {"kind": "Service", "name": "s"}, "tls": {"termination": "bogus"}}
    assert any("termination" in error for error in crd.errors(CRDS["Route"], route))
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "s"}}
    scaled["spec"] = {"triggers": [{"metadata": {}}]}
    assert len(crd.errors(CRDS["ScaledObject"], scaled)) == 2  # no scaleTargetRef, no type


def test_openshift_has_routes_and_an_scc_kubernetes_an_ingress() -> None:
    kinds = {o: {x["kind"] for x in manifests.render(manifests.DEPLOY / "overlays" / o)}
             for o in OVERLAYS}  # fmt: skip
    assert {"Route", "SecurityContextConstraints"} <= kinds["openshift"]
    assert "Ingress" in kinds["kubernetes"]
    assert not {"Route", "SecurityContextConstraints"} & kinds["kubernetes"]


def test_every_image_is_pinned_by_digest(rendered: list[Obj]) -> None:
    for workload, spec in containers(rendered):
        image = spec["image"]
        assert image == PLACEHOLDER or DIGEST.match(image), (
            f"{workload['metadata']['name']}: {image}"
        )
        assert ":latest" not in image
        assert ":" not in image.split("@")[0].rsplit("/", 1)[-1], (
            f"a tag beside the digest: {image}"
        )


def test_no_container_is_privileged_or_escalates(rendered: list[Obj]) -> None:
    for workload, spec in pod_specs(rendered):
        for item in [*spec.get("initContainers", []), *spec["containers"]]:
            where = (workload["metadata"]["name"], item["name"])
            context = item.get("securityContext", {})
            assert context.get("privileged", False) is False, where
            assert context.get("allowPrivilegeEscalation") is False, where
            capabilities = context.get("capabilities", {})
            assert capabilities.get("drop") == ["ALL"], where
            added = set(capabilities.get("add", []))
            assert added == ADDED_CAPABILITIES.get(where, set()), where
            if added:  # root's capabilities only ever inside a pod-level user namespace
                assert spec["hostUsers"] is False, where
        for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host_namespace), (workload["metadata"]["name"], host_namespace)
        assert all("hostPath" not in volume for volume in spec.get("volumes", []))


def test_the_scc_allows_only_what_the_build_workers_use(openshift: list[Obj]) -> None:
    scc = named(openshift, "SecurityContextConstraints", "layering-buildah")
    assert scc["allowPrivilegedContainer"] is False
    assert scc["allowPrivilegeEscalation"] is False
    assert set(scc["allowedCapabilities"]) == BUILDAH_CAPABILITIES
    assert scc["userNamespaceLevel"] == "RequirePodLevel"
    assert not any(scc[f"allowHost{h}"] for h in ("DirVolumePlugin", "IPC", "Network", "PID"))
    assert "hostPath" not in scc["volumes"]
    template = named(openshift, "Deployment", "layering-builds")["spec"]["template"]
    assert template["metadata"]["annotations"]["openshift.io/required-scc"] == "layering-buildah"


def test_every_container_has_requests_and_limits(rendered: list[Obj]) -> None:
    for workload, spec in containers(rendered):
        resources = spec.get("resources", {})
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(bound, {})), (
                f"{workload['metadata']['name']}/{spec['name']}: no {bound}"
            )


def test_rbac_is_exactly_the_listed_reads(openshift: list[Obj]) -> None:
    granted: dict[tuple[str, str, str | None], list[tuple[Any, ...]]] = {}
    for role in [o for o in openshift if o["kind"] in ("Role", "ClusterRole")]:
        key = (role["kind"], role["metadata"]["name"], role["metadata"].get("namespace"))
        granted[key] = [
            (group, resource, tuple(rule.get("resourceNames", [])), tuple(rule["verbs"]))
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
        ]
    assert granted == RBAC
    bound = {
        b["roleRef"]["name"]: [s["name"] for s in b["subjects"]]
        for b in openshift
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
    }
    assert bound == BINDINGS
    accounts = {w["metadata"]["name"]: s["serviceAccountName"] for w, s in pod_specs(openshift)}
    assert accounts["layering-events"] == "layering-events"  # the only reader of the cluster
    assert accounts["layering-builds"] == "layering-builds"


def test_beat_is_one_pod_replaced_not_rolled(rendered: list[Obj]) -> None:
    beat = named(rendered, "Deployment", "layering-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}


def test_receiver_probes_health_and_readiness(rendered: list[Obj]) -> None:
    web = container(rendered, "layering-web", "web")
    port = web["command"][web["command"].index("--port") + 1]
    assert web["ports"] == [{"name": "webhook", "containerPort": int(port)}]
    assert web["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "webhook"}
    assert web["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "webhook"}


def test_workers_probe_their_own_celery_node(rendered: list[Obj]) -> None:
    for workload in ("layering-events", "layering-builds"):
        worker = container(rendered, workload, "worker")
        hostname = next(a for a in worker["command"] if a.startswith("--hostname="))
        node = hostname.removeprefix("--hostname=").replace("%h", "$HOSTNAME")
        probe = " ".join(worker["livenessProbe"]["exec"]["command"])
        assert "celery -A workers.app inspect ping" in probe
        assert f'-d "{node}"' in probe, probe


def test_keda_scales_the_build_workers_on_the_builds_queue(rendered: list[Obj]) -> None:
    scaled = named(rendered, "ScaledObject", "layering-builds")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "layering-builds")
    assert (
        f"--queues={tasks.BUILDS_QUEUE}" in container(rendered, target["name"], "worker")["command"]
    )
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == tasks.BUILDS_QUEUE
    assert trigger["metadata"]["address"] == "layering-redis.layering.svc:6379"
    auth = named(rendered, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "layering-redis", "key": "password"}
    ]
    assert [o["metadata"]["name"] for o in rendered if o["kind"] == "ScaledObject"] == [
        "layering-builds"
    ]


def test_build_workers_use_overlay_storage_on_an_empty_dir(rendered: list[Obj]) -> None:
    worker = container(rendered, "layering-builds", "worker")
    variables = env(worker)
    assert variables["LAYERING_BUILDAH_STORAGE_DRIVER"]["value"] == "overlay"
    assert variables["LAYERING_BUILDAH_ISOLATION"]["value"] == "chroot"
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    spec = named(rendered, "Deployment", "layering-builds")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/containers"]]
    assert variables["LAYERING_BUILDAH_ROOT"]["value"].startswith("/var/lib/containers/")


def test_budgets_cover_every_long_running_workload(rendered: list[Obj]) -> None:
    budgets = [
        o["spec"]["selector"]["matchLabels"] for o in rendered if o["kind"] == "PodDisruptionBudget"
    ]
    for workload, _ in pod_specs(rendered):
        if workload["metadata"]["name"] != "layering-beat":  # one pod, Recreate
            assert workload["spec"]["selector"]["matchLabels"] in budgets, workload["metadata"]


def test_no_secret_is_shipped_or_put_on_an_argv(rendered: list[Obj]) -> None:
    # the one Secret shipped holds nothing: the cluster writes the scraper's token into it
    shipped = [o for o in rendered if o["kind"] == "Secret"]
    assert [
        o
        for o in shipped
        if o.get("type") != "kubernetes.io/service-account-token"
        or {"data", "stringData"} & o.keys()
    ] == []
    referenced: set[str] = set()
    for _, spec in pod_specs(rendered):
        referenced |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for _, item in containers(rendered):
        from_secret = {
            name for name, v in env(item).items() if "secretKeyRef" in v.get("valueFrom", {})
        }
        referenced |= {env(item)[name]["valueFrom"]["secretKeyRef"]["name"] for name in from_secret}
        # a variable built from a secret is a secret too (LAYERING_REDIS_URL)
        from_secret |= {
            name
            for name, v in env(item).items()
            if any(f"$({s})" in v.get("value", "") for s in from_secret)
        }
        argv = " ".join([*item.get("command", []), *item.get("args", [])])
        assert not any(f"$({name})" in argv for name in from_secret), (item["name"], argv)
    assert referenced <= SECRETS
    assert {"layering-webhook", "layering-redis", "layering-registry-auth"} <= referenced


def test_the_settings_used_exist_and_are_valid(
    rendered: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.adapters.environment import load_settings

    config = named(rendered, "ConfigMap", "layering-config")["data"]
    service = [(w, c) for w, c in containers(rendered) if c["image"] == PLACEHOLDER]
    assert len(service) == 4  # web, events, builds, beat
    for workload, item in service:
        for name in [n for n in os.environ if n.startswith("LAYERING_")]:
            monkeypatch.delenv(name)
        values = {
            **config,
            **{n: v.get("value", "s3cret-value-1234") for n, v in env(item).items()},
        }
        values = {n: v.replace("$(REDIS_PASSWORD)", "hex") for n, v in values.items()}
        values.update(
            (n, "12345")
            for n in ("LAYERING_GITHUB_APP_ID", "LAYERING_GITHUB_APP_INSTALLATION_ID")
            if n in values
        )
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        settings = load_settings()
        known = {f"LAYERING_{field.upper()}" for field in type(settings).model_fields}
        unknown = {n for n in values if n.startswith("LAYERING_")} - known
        assert unknown == set(), f"{workload['metadata']['name']}: no such setting {unknown}"
        if "LAYERING_READ_LISTEN" in values:
            assert settings.read_address == ("127.0.0.1", 8081)


def test_the_dashboard_listens_on_loopback_behind_oauth_proxy(openshift: list[Obj]) -> None:
    read_listen = env(container(openshift, "layering-web", "web"))["LAYERING_READ_LISTEN"]
    proxy = container(openshift, "layering-web", "oauth-proxy")
    assert f"--upstream=http://{read_listen['value']}" in proxy["args"]
    assert read_listen["value"].startswith("127.0.0.1:")
    service_ports = named(openshift, "Service", "layering-web")["spec"]["ports"]
    assert {p["targetPort"] for p in service_ports} == {"webhook", "dashboard"}
    assert {p["name"] for p in proxy["ports"]} == {"dashboard"}
    webhook = named(openshift, "Route", "layering-webhook")["spec"]
    assert (webhook["path"], webhook["port"]["targetPort"]) == ("/webhook", "webhook")
    dashboard = named(openshift, "Route", "layering-dashboard")["spec"]
    assert (dashboard["port"]["targetPort"], dashboard["tls"]["termination"]) == (
        "dashboard",
        "reencrypt",
    )
