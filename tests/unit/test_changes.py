"""changes.plan: tables of commit ranges -> builds, deleted images, environments."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from pipeline.core import changes, content_address, repo

BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev"
A, B, C = ("sha256:" + ch * 64 for ch in "abc")
CONTAINERFILE = b"FROM " + BASE.encode() + b"\nRUN ostree container commit\n"


@dataclass(frozen=True)
class Spec:
    """A small repository: image -> tree id, cluster -> cluster.yaml fields."""

    images: Mapping[str, str] = field(
        default_factory=lambda: {"firewalld": "1" * 40, "htop": "2" * 40, "fish": "3" * 40}
    )
    clusters: Mapping[str, Mapping[str, object]] = field(
        default_factory=lambda: {
            "nonprod": {
                "environment": "nonprod",
                "baseImage": f"{BASE}@{A}",
                "pools": {"worker": "firewalld", "infra": "htop"},
            },
            "prod": {
                "environment": "prod",
                "baseImage": f"{BASE}@{B}",
                "pools": {"worker": "firewalld"},
            },
        }
    )
    image_yaml: Mapping[str, bytes] = field(
        default_factory=lambda: {"htop": b"buildArgs: {EPEL: '9'}\n"}
    )
    without_containerfile: tuple[str, ...] = ()

    def but(self, **changes: Any) -> Spec:
        return dataclasses.replace(self, **changes)

    def with_cluster(self, name: str, **settings: object) -> Spec:
        clusters = dict(self.clusters)
        clusters[name] = {**clusters.get(name, {}), **settings}
        return self.but(clusters=clusters)

    def without_cluster(self, name: str) -> Spec:
        return self.but(clusters={k: v for k, v in self.clusters.items() if k != name})

    def with_image(self, name: str, tree: str) -> Spec:
        return self.but(images={**self.images, name: tree})

    def without_image(self, name: str) -> Spec:
        return self.but(images={k: v for k, v in self.images.items() if k != name})

    def repository(self) -> repo.Repository:
        files: dict[str, bytes] = {}
        for image in self.images:
            if image not in self.without_containerfile:
                files[f"images/{image}/Containerfile"] = CONTAINERFILE
            if image in self.image_yaml:
                files[f"images/{image}/image.yaml"] = self.image_yaml[image]
        for name, settings in self.clusters.items():
            document = {"registry": "registry.example.com/layering", **settings}
            files[f"clusters/{name}/cluster.yaml"] = yaml.safe_dump(document).encode()
        listing = repo.TreeListing(dict(self.images), list(self.clusters), files)
        return repo.parse(listing)


BEFORE = Spec()
FIREWALLD_NONPROD = ("firewalld", "nonprod")
FIREWALLD_PROD = ("firewalld", "prod")
HTOP_NONPROD = ("htop", "nonprod")


@dataclass(frozen=True)
class Case:
    name: str
    paths: tuple[str, ...]
    after: Spec
    builds: tuple[tuple[str, str], ...]
    environments: tuple[str, ...]
    deleted: tuple[str, ...] = ()
    before: Spec | None = BEFORE
    problems: tuple[str, ...] = ()


CASES = [
    Case(
        "image change rebuilds on every cluster using it",
        ("images/firewalld/Containerfile",),
        BEFORE.with_image("firewalld", "9" * 40),
        (FIREWALLD_NONPROD, FIREWALLD_PROD),
        ("nonprod", "prod"),
    ),
    Case(
        "any file of the build context counts",
        ("images/htop/files/etc/motd",),
        BEFORE.with_image("htop", "9" * 40),
        (HTOP_NONPROD,),
        ("nonprod",),
    ),
    Case(
        "image in no pool builds nothing",
        ("images/fish/Containerfile",),
        BEFORE.with_image("fish", "9" * 40),
        (),
        (),
    ),
    Case("files outside images/ and clusters/", ("README.md", "docs/x.md"), BEFORE, (), ()),
    Case(
        "machineconfigs written by promotion build nothing",
        ("clusters/prod/machineconfigs/99-layering-worker-os-image.yaml",),
        BEFORE,
        (),
        (),
    ),
    Case(
        "deleted image is listed, builds nothing",
        ("images/fish/Containerfile",),
        BEFORE.without_image("fish"),
        (),
        (),
        deleted=("fish",),
    ),
    Case(
        "deleted image and its pool: the cluster's other images and environment",
        ("images/htop/Containerfile", "clusters/nonprod/cluster.yaml"),
        BEFORE.without_image("htop").with_cluster("nonprod", pools={"worker": "firewalld"}),
        (FIREWALLD_NONPROD,),
        ("nonprod",),
        deleted=("htop",),
    ),
    Case(
        "deleted image still in a pool is a problem",
        ("images/htop/Containerfile",),
        BEFORE.without_image("htop"),
        (),
        ("nonprod",),
        deleted=("htop",),
        problems=("clusters/nonprod/cluster.yaml",),
    ),
    Case(
        "base image bump rebuilds all images of that cluster only",
        ("clusters/nonprod/cluster.yaml",),
        BEFORE.with_cluster("nonprod", baseImage=f"{BASE}@{C}"),
        (FIREWALLD_NONPROD, HTOP_NONPROD),
        ("nonprod",),
    ),
    Case(
        "registry change rebuilds (pushes to the new registry)",
        ("clusters/prod/cluster.yaml",),
        BEFORE.with_cluster("prod", registry="quay.io/other"),
        (FIREWALLD_PROD,),
        ("prod",),
    ),
    Case(
        "pools change rebuilds the cluster's images",
        ("clusters/prod/cluster.yaml",),
        BEFORE.with_cluster("prod", pools={"worker": "firewalld", "infra": "htop"}),
        (FIREWALLD_PROD, ("htop", "prod")),
        ("prod",),
    ),
    Case(
        "pool removed: nothing to build, environment affected",
        ("clusters/nonprod/cluster.yaml",),
        BEFORE.with_cluster("nonprod", pools={}),
        (),
        ("nonprod",),
    ),
    Case(
        "soak change builds nothing",
        ("clusters/prod/cluster.yaml",),
        BEFORE.with_cluster("prod", soak="24h"),
        (),
        (),
    ),
    Case(
        "cluster moved to another environment",
        ("clusters/prod/cluster.yaml",),
        BEFORE.with_cluster("prod", environment="staging"),
        (),
        ("prod", "staging"),
    ),
    Case(
        "new cluster builds its images",
        ("clusters/edge/cluster.yaml",),
        BEFORE.with_cluster(
            "edge", environment="edge", baseImage=f"{BASE}@{C}", pools={"worker": "htop"}
        ),
        (("htop", "edge"),),
        ("edge",),
    ),
    Case(
        "deleted cluster affects its environment",
        ("clusters/prod/cluster.yaml",),
        BEFORE.without_cluster("prod"),
        (),
        ("prod",),
    ),
    Case(
        "image with a bad image.yaml is not built",
        ("images/htop/image.yaml",),
        BEFORE.but(image_yaml={"htop": b"buildArgs: [1]\n"}).with_image("htop", "9" * 40),
        (),
        (),
        problems=("images/htop/image.yaml",),
    ),
    Case(
        "image without Containerfile is not built",
        ("images/firewalld/Containerfile",),
        BEFORE.but(without_containerfile=("firewalld",)).with_image("firewalld", "9" * 40),
        (),
        (),
        problems=("images/firewalld/Containerfile",),
    ),
    Case(
        "invalid cluster.yaml builds nothing there and is a problem",
        ("clusters/prod/cluster.yaml", "images/firewalld/Containerfile"),
        BEFORE.with_cluster("prod", baseImage=f"{BASE}:latest").with_image("firewalld", "9" * 40),
        (FIREWALLD_NONPROD,),
        ("nonprod", "prod"),
        problems=("clusters/prod/cluster.yaml",),
    ),
    Case(
        "no earlier commit: every assigned pair",
        (),
        BEFORE,
        (FIREWALLD_NONPROD, FIREWALLD_PROD, HTOP_NONPROD),
        ("nonprod", "prod"),
        before=None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_plan(case: Case) -> None:
    before = case.before.repository() if case.before is not None else None

    plan = changes.plan(case.paths, before=before, after=case.after.repository())

    assert [(t.image, t.cluster) for t in plan.builds] == list(case.builds)
    assert plan.environments == case.environments
    assert plan.deleted_images == case.deleted
    assert tuple(p.path for p in plan.problems) == case.problems


def test_build_key_pools_and_build_args() -> None:
    after = BEFORE.with_image("htop", "9" * 40)

    (target,) = changes.plan(
        ["images/htop/Containerfile"], before=BEFORE.repository(), after=after.repository()
    ).builds

    assert target.build_key == content_address.build_key(
        tree_id="9" * 40, base_digest=A, build_args={"EPEL": "9"}
    )
    assert (target.pools, target.environment, target.base_digest) == (("infra",), "nonprod", A)
    assert target.repository == "registry.example.com/layering/htop"
    assert target.tag == target.build_key[:20]
    assert target.reason == "images/htop/ changed"


def test_image_change_reason_wins_over_cluster_reason() -> None:
    after = BEFORE.with_cluster("prod", baseImage=f"{BASE}@{C}").with_image("firewalld", "9" * 40)

    plan = changes.plan(
        ["clusters/prod/cluster.yaml", "images/firewalld/x"],
        before=BEFORE.repository(),
        after=after.repository(),
    )

    assert [t.reason for t in plan.builds] == ["images/firewalld/ changed"] * 2


def test_cluster_reason_names_what_changed() -> None:
    after = BEFORE.with_cluster("nonprod", baseImage=f"{BASE}@{C}", registry="quay.io/x")

    plan = changes.plan(
        ["clusters/nonprod/cluster.yaml"], before=BEFORE.repository(), after=after.repository()
    )

    assert {t.reason for t in plan.builds} == {
        "clusters/nonprod/cluster.yaml: baseImage, registry changed"
    }


def test_unassigned_changed_images_are_reported() -> None:
    after = BEFORE.with_image("fish", "9" * 40)

    plan = changes.plan(
        ["images/fish/Containerfile"], before=BEFORE.repository(), after=after.repository()
    )

    assert plan.unassigned_images == ("fish",)
    assert plan.to_json()["unassigned_images"] == ["fish"]


def test_unknown_tree_id_is_refused() -> None:
    repository = repo.parse_files(
        {
            "images/htop/Containerfile": CONTAINERFILE,
            "clusters/c/cluster.yaml": yaml.safe_dump(
                {
                    "environment": "e",
                    "baseImage": f"{BASE}@{A}",
                    "registry": "r.example.com/x",
                    "pools": {"worker": "htop"},
                }
            ).encode(),
        }
    )

    with pytest.raises(ValueError, match="tree id unknown"):
        changes.plan([], before=None, after=repository)


@pytest.mark.parametrize(
    ("paths", "images", "clusters"),
    [
        (["images/a/Containerfile", "images/b/x/y"], {"a", "b"}, set()),
        (["images/README.md", "imagesx/a/b"], set(), set()),
        (["clusters/c/cluster.yaml", "clusters/d/machineconfigs/x.yaml"], set(), {"c"}),
        (["clusters/cluster.yaml"], set(), set()),
    ],
)
def test_changed_images_and_cluster_files(
    paths: list[str], images: set[str], clusters: set[str]
) -> None:
    assert changes.changed_images(paths) == images
    assert changes.changed_cluster_files(paths) == clusters
