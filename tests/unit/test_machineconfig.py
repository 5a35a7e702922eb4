from __future__ import annotations

import pytest

from pipeline.core import machineconfig, yamlfile
from tests import crd

DIGEST = "sha256:" + "c" * 64
OS_IMAGE = machineconfig.OsImage(
    image="firewalld",
    repository="registry.example.com/layering/firewalld",
    digest=DIGEST,
    build_key="d" * 64,
    source_commit="e" * 40,
    base_image="quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64,
)


@pytest.mark.parametrize("pool", ["worker", "infra", "master", "worker-gpu"])
def test_rendered_machineconfig_is_valid_for_the_crd(pool: str) -> None:
    rendered = machineconfig.render(pool=pool, os_image=OS_IMAGE)
    assert crd.machineconfig_errors(rendered) == []
    assert rendered["metadata"]["name"] == f"99-layering-{pool}-os-image"
    assert rendered["metadata"]["labels"][machineconfig.ROLE_LABEL] == pool
    assert rendered["spec"]["osImageURL"] == f"registry.example.com/layering/firewalld@{DIGEST}"


def test_schema_check_is_not_vacuous() -> None:
    rendered = machineconfig.render(pool="worker", os_image=OS_IMAGE)
    rendered["spec"]["osImageURL"] = 42
    assert crd.machineconfig_errors(rendered)


def test_same_input_same_bytes_and_round_trip() -> None:
    first = machineconfig.render_yaml(pool="worker", os_image=OS_IMAGE)
    second = machineconfig.render_yaml(pool="worker", os_image=OS_IMAGE)
    assert first == second
    assert first.endswith(b"\n")
    parsed = machineconfig.parse_managed(first)
    assert parsed == machineconfig.render(pool="worker", os_image=OS_IMAGE)
    assert yamlfile.load(first)["apiVersion"] == "machineconfiguration.openshift.io/v1"


def test_annotations_name_the_source() -> None:
    annotations = machineconfig.render(pool="worker", os_image=OS_IMAGE)["metadata"]["annotations"]
    assert annotations == {
        "layering/image": "firewalld",
        "layering/source-commit": "e" * 40,
        "layering/build-key": "d" * 64,
        "layering/base-image": OS_IMAGE.base_image,
    }


@pytest.mark.parametrize(
    ("pool", "digest"),
    [("Worker", DIGEST), ("worker", "sha256:short"), ("worker", "md5:" + "c" * 64)],
)
def test_render_refuses_bad_names_and_digests(pool: str, digest: str) -> None:
    bad = machineconfig.OsImage(**{**OS_IMAGE.__dict__, "digest": digest})
    with pytest.raises(ValueError):  # noqa: PT011 - message checked by callers
        machineconfig.render(pool=pool, os_image=bad)


def test_foreign_machineconfigs_are_not_managed() -> None:
    foreign = (
        b"apiVersion: machineconfiguration.openshift.io/v1\n"
        b"kind: MachineConfig\nmetadata: {name: 50-x}\n"
    )
    assert machineconfig.parse_managed(foreign) is None
    assert machineconfig.parse_managed(b"\0binary") is None
