"""Cluster upgrades as data: the release payload's node OS image (core/release_payload.py),
the cluster.yaml bump and the rebuild plan (core/upgrade.py), the API body
(core/upgrade_request.py)."""

from __future__ import annotations

import json

import pytest

from pipeline.core import names, release_payload, repo, upgrade, upgrade_request
from pipeline.core.errors import InputError, PermanentError

OLD = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64
NEW = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "b" * 64


def image_references(tags: dict[str, str]) -> bytes:
    return json.dumps(
        {
            "kind": "ImageStream",
            "apiVersion": "image.openshift.io/v1",
            "metadata": {"name": "4.16.3"},
            "spec": {
                "tags": [
                    {"name": name, "from": {"kind": "DockerImage", "name": ref}}
                    for name, ref in tags.items()
                ]
            },
        }
    ).encode()


@pytest.mark.parametrize(
    ("tags", "wanted", "chosen"),
    [
        ({"rhel-coreos": NEW, "cli": OLD}, None, "rhel-coreos"),
        ({"rhel-coreos": NEW, "rhel-coreos-10": OLD}, None, "rhel-coreos"),
        ({"rhel-coreos": OLD, "rhel-coreos-10": NEW}, "rhel-coreos-10", "rhel-coreos-10"),
        ({"stream-coreos": NEW}, None, "stream-coreos"),
        ({"fedora-coreos": NEW}, None, "fedora-coreos"),
    ],
)
def test_node_image_tag_choice(tags: dict[str, str], wanted: str | None, chosen: str) -> None:
    found = release_payload.tags(image_references(tags), release="r")
    node = release_payload.node_image(found, release="r", tag=wanted)
    assert (node.tag, str(node.image)) == (chosen, NEW)


def test_node_image_drops_a_tag_beside_the_digest() -> None:
    found = {"rhel-coreos": NEW.replace("@", ":4.16@")}
    assert str(release_payload.node_image(found, release="r").image) == NEW


def test_missing_tag_lists_the_tags_there() -> None:
    found = release_payload.tags(image_references({"cli": OLD, "installer": OLD}), release="r")
    with pytest.raises(PermanentError) as caught:
        release_payload.node_image(found, release="quay.io/x/y:4.16")
    message = str(caught.value)
    assert "no node OS image tag rhel-coreos or stream-coreos or fedora-coreos" in message
    assert "(its tags: cli, installer)" in message
    assert "\n" not in message


def test_a_tag_where_a_digest_is_required() -> None:
    with pytest.raises(PermanentError, match="by tag; a node OS image must be named by digest"):
        release_payload.node_image({"rhel-coreos": "quay.io/x/rhcos:latest"}, release="r")


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", json.dumps({"kind": "Deployment"}).encode(), b"{" * 10],
)
def test_not_image_references(raw: bytes) -> None:
    with pytest.raises(PermanentError, match="release r: release-manifests/image-references"):
        release_payload.tags(raw, release="r")


@pytest.mark.parametrize(
    ("member", "wanted"),
    [
        ("release-manifests/image-references", True),
        ("./release-manifests/image-references", True),
        ("/release-manifests/image-references", True),
        ("release-manifests/../release-manifests/image-references", True),
        ("../release-manifests/image-references", False),
        ("x/release-manifests/image-references", False),
        ("release-manifests/image-references/", True),
        ("", False),
    ],
)
def test_member_names(member: str, wanted: bool) -> None:
    assert release_payload.is_image_references(member) is wanted


CLUSTER_YAML = (
    b"# Non-production: every image is tried here first.\n"
    b"environment: nonprod\n"
    b"baseImage: " + OLD.encode() + b"  # bumped by layering upgrade\n"
    b"registry: registry.example.com/layering\n"
    b"pools:\n  worker: firewalld\n"
)


def bump(raw: bytes) -> bytes:
    return upgrade.bumped_cluster_file(raw, upgrade.Upgrade("nonprod", OLD, NEW))


def test_bump_keeps_every_other_byte() -> None:
    assert bump(CLUSTER_YAML) == CLUSTER_YAML.replace(OLD.encode(), NEW.encode())
    quoted = CLUSTER_YAML.replace(OLD.encode(), b'"' + OLD.encode() + b'"')
    assert bump(quoted) == quoted.replace(OLD.encode(), NEW.encode())
    as_json = json.dumps({"environment": "nonprod", "baseImage": OLD}).encode()
    assert bump(as_json) == as_json.replace(OLD.encode(), NEW.encode())


def test_bump_refuses_what_it_cannot_do_in_place() -> None:
    twice = CLUSTER_YAML + b"# was " + OLD.encode() + b"\n"
    assert bump(twice).count(NEW.encode()) == 1  # the line form wins
    hidden = b"environment: nonprod\n? baseImage\n: " + OLD.encode() + b"\n# " + OLD.encode()
    with pytest.raises(PermanentError, match=r"set it to .* by hand"):
        bump(hidden)


def test_branch_and_rebuilds() -> None:
    assert upgrade.branch_for("nonprod", NEW) == "layering/upgrade-nonprod-bbbbbbbbbbbb"
    model = repo.parse(
        repo.TreeListing(
            image_dirs={"firewalld": "1" * 40, "chrony": "2" * 40},
            cluster_dirs=["nonprod"],
            files={
                "images/firewalld/Containerfile": b"FROM quay.io/openshift-release-dev/"
                b"ocp-v4.0-art-dev\nRUN ostree container commit\n",
                "images/chrony/Containerfile": b"FROM x\n",
                "clusters/nonprod/cluster.yaml": CLUSTER_YAML,
            },
        )
    )
    plan = upgrade.rebuilds(model, upgrade.Upgrade("nonprod", OLD, NEW))
    assert [(t.image, t.cluster, t.pools, t.base_image) for t in plan.builds] == [
        ("firewalld", "nonprod", ("worker",), NEW)
    ]
    with pytest.raises(InputError, match="unknown cluster 'prod' \\(known: nonprod\\)"):
        upgrade.cluster_of(model, "prod")


def test_new_base_must_be_a_digest() -> None:
    assert upgrade.new_base_ref(NEW, source="s") == names.parse_image_ref(NEW)
    with pytest.raises(PermanentError, match=r"s: quay\.io/x:4\.16 is a tag"):
        upgrade.new_base_ref("quay.io/x:4.16", source="s")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{", "body: expected JSON"),
        (b"[]", "body: expected a JSON object"),
        (b'{"release": "quay.io/a/b:1"}', "cluster: required"),
        (b'{"cluster": "Bad_Name", "release": "quay.io/a/b:1"}', "cluster: required"),
        (b'{"cluster": "nonprod"}', "release: required"),
        (b'{"cluster": "nonprod", "release": "a b"}', "release: 'a b' is not"),
        (b'{"cluster": "nonprod", "release": "q.io/a:1", "os_tag": "x"}', "os_tag: one of"),
        (b'{"cluster": "nonprod", "release": "q.io/a:1", "x": 1}', "x: unknown field"),
    ],
)
def test_api_body_errors(body: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        upgrade_request.task_for(body)


def test_api_body_to_task() -> None:
    call = upgrade_request.task_for(b'{"cluster": "nonprod", "release": "quay.io/a/b:4.16"}')
    assert (call.name, call.queue) == ("layering.upgrade", "promotions")
    assert call.kwargs == {"cluster": "nonprod", "release": "quay.io/a/b:4.16", "os_tag": None}
