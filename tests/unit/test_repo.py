from __future__ import annotations

import pytest

from pipeline.core import repo

DIGEST = "sha256:" + "1" * 64
BASE = f"quay.io/openshift-release-dev/ocp-v4.0-art-dev@{DIGEST}"
CONTAINERFILE = b"ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN ostree container commit\n"


def cluster_yaml(**overrides: str) -> bytes:
    fields = {
        "environment": "nonprod",
        "baseImage": BASE,
        "registry": "registry.example.com/layering",
        "pools": "\n  worker: firewalld",
    }
    fields.update(overrides)
    return "".join(f"{k}: {v}\n" for k, v in fields.items() if v != "<absent>").encode()


def files() -> dict[str, bytes]:
    return {
        "images/firewalld/Containerfile": CONTAINERFILE,
        "clusters/nonprod/cluster.yaml": cluster_yaml(),
    }


def problems(listing: dict[str, bytes]) -> list[str]:
    return [str(p) for p in repo.parse_files(listing).problems]


def test_valid_repository() -> None:
    repository = repo.parse_files(files())
    assert repository.problems == ()
    cluster = repository.clusters["nonprod"]
    assert cluster.base_digest == DIGEST
    assert cluster.pools == {"worker": "firewalld"}
    assert cluster.branch == "env/nonprod"
    assert [c.name for c in repository.clusters_using("firewalld")] == ["nonprod"]


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (
            cluster_yaml(baseImage="quay.io/openshift-release-dev/ocp-v4.0-art-dev:4.16"),
            "clusters/nonprod/cluster.yaml:2: baseImage: must be pinned by digest",
        ),
        (
            cluster_yaml(baseImage="quay.io/x@sha256:abc"),
            "clusters/nonprod/cluster.yaml:2: baseImage: digest 'sha256:abc' is not sha256:",
        ),
        (
            cluster_yaml(baseImage="<absent>"),
            "clusters/nonprod/cluster.yaml: baseImage: required key is missing",
        ),
        (
            cluster_yaml(colour="blue"),
            "clusters/nonprod/cluster.yaml:6: colour: unknown key; remove it",
        ),
        (
            cluster_yaml(environment="Non_Prod"),
            "clusters/nonprod/cluster.yaml:1: environment: must be a DNS label",
        ),
        (
            cluster_yaml(pools="\n  worker: firewalld\n  worker: htop"),
            "clusters/nonprod/cluster.yaml:6: key 'worker' appears twice (lines 5 and 6)",
        ),
        (
            cluster_yaml(pools="\n  worker: [firewalld, htop]"),
            "clusters/nonprod/cluster.yaml:4: pools: pool 'worker' must name exactly one image",
        ),
        (
            cluster_yaml(pools="\n  Worker_Pool: firewalld"),
            "clusters/nonprod/cluster.yaml:4: pools: pool name 'Worker_Pool' must",
        ),
        (
            cluster_yaml(pools="\n  worker: nosuchimage"),
            "clusters/nonprod/cluster.yaml: pools.worker: image 'nosuchimage' does not exist",
        ),
        (
            cluster_yaml(registry="registry.example.com/layering:latest"),
            "clusters/nonprod/cluster.yaml:3: registry: must be a repository prefix",
        ),
        (
            cluster_yaml(soak="soon"),
            "clusters/nonprod/cluster.yaml:6: soak: 'soon' is not a duration",
        ),
        (
            cluster_yaml(soak="true"),
            "clusters/nonprod/cluster.yaml:6: soak: must be a duration",
        ),
        (b"environment: [unclosed\n", "clusters/nonprod/cluster.yaml:2: invalid YAML"),
        (b"- a\n- b\n", "clusters/nonprod/cluster.yaml: must be a YAML mapping, found list"),
        (b"\x00\x01binary", "clusters/nonprod/cluster.yaml: not a text file"),
    ],
)
def test_cluster_problems_name_file_line_and_field(cluster: bytes, expected: str) -> None:
    found = problems({**files(), "clusters/nonprod/cluster.yaml": cluster})
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"images/Fire_Walld/Containerfile": CONTAINERFILE}, "images/Fire_Walld: image name"),
        (
            {"images/empty/image.yaml": b"entitlement: true\n"},
            "images/empty/Containerfile: missing",
        ),
        ({"images/firewalld/Containerfile": b"\x7fELF\x00\x00"}, "is a binary file"),
        ({"images/firewalld/Containerfile": b"FROM a\n\xff\xfe"}, "is not UTF-8 text"),
        (
            {"images/firewalld/image.yaml": b"allow:\n  - rule: LAY003\n"},
            "images/firewalld/image.yaml:2: allow.0.reason: required key is missing",
        ),
        (
            {"images/firewalld/image.yaml": b"allow:\n  - rule: LAY003\n    reason: '  '\n"},
            "images/firewalld/image.yaml:3: allow.0.reason: a waiver needs a reason",
        ),
        (
            {"images/firewalld/image.yaml": b"allow:\n  - rule: LAY006\n    reason: x\n"},
            "images/firewalld/image.yaml:2: allow.0.rule: Input should be",
        ),
        (
            {"images/firewalld/image.yaml": b"buildArgs:\n  bad-name: x\n"},
            "images/firewalld/image.yaml:1: buildArgs: build argument name 'bad-name'",
        ),
        (
            {"images/firewalld/image.yaml": b"entitlement: 'yes'\n"},
            "images/firewalld/image.yaml:1: entitlement: Input should be a valid boolean",
        ),
        ({"images/firewalld/image.yaml": b"entitelment: true\n"}, "entitelment: unknown key"),
        ({"clusters/prod/notes.txt": b"x"}, "clusters/prod/cluster.yaml: missing"),
    ],
)
def test_image_and_directory_problems(extra: dict[str, bytes], expected: str) -> None:
    found = problems({**files(), **extra})
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0s", 0), ("90", None), ("30m", 1800), ("24h", 86400), ("2d", 172800), ("1h30m", 5400)],
)
def test_soak_parsing(value: str, seconds: int | None) -> None:
    if seconds is None:
        with pytest.raises(ValueError, match="not a duration"):
            repo.duration_seconds(value)
    else:
        assert repo.duration_seconds(value) == seconds


def test_soak_as_number_of_seconds() -> None:
    listing = {**files(), "clusters/nonprod/cluster.yaml": cluster_yaml(soak="90")}
    repository = repo.parse_files(listing)
    assert repository.problems == ()
    assert repository.clusters["nonprod"].soak_seconds == 90


def prod(**overrides: str) -> bytes:
    return cluster_yaml(environment="prod", **overrides)


@pytest.mark.parametrize(
    ("prod_yaml", "expected"),
    [
        (prod(promotesFrom="nonprod", soak="24h"), None),
        (prod(promotesFrom="staging"), "promotesFrom: unknown cluster 'staging'"),
        (
            cluster_yaml(promotesFrom="nonprod"),
            "promotesFrom: 'nonprod' is in the same environment 'nonprod'",
        ),
    ],
)
def test_promotes_from(prod_yaml: bytes, expected: str | None) -> None:
    found = problems({**files(), "clusters/prod/cluster.yaml": prod_yaml})
    if expected is None:
        assert found == []
    else:
        assert [p for p in found if expected in p and p.startswith("clusters/prod/")], found


def test_schema_problems_of_one_file_are_capped() -> None:
    """A hostile image.yaml with thousands of bad waivers: 20 problems (each with its line,
    the document composed once) and a count of the rest."""
    waivers = "".join(f"  - {{rule: LAY99{n}, reason: x}}\n" for n in range(5000))
    listing = {**files(), "images/firewalld/image.yaml": f"allow:\n{waivers}".encode()}
    found = [p for p in repo.parse_files(listing).problems if "image.yaml" in p.path]
    assert len(found) == repo.MAX_PROBLEMS_PER_FILE + 1
    assert found[0].line == 2
    assert found[-1].message == "4980 more problems like these; fix the ones above first"


def test_promotes_from_cycle() -> None:
    listing = {
        **files(),
        "clusters/nonprod/cluster.yaml": cluster_yaml(promotesFrom="prod"),
        "clusters/prod/cluster.yaml": prod(promotesFrom="nonprod"),
    }
    assert any("promotesFrom forms a cycle" in p for p in problems(listing))


@pytest.mark.parametrize(
    ("path", "interesting"),
    [
        ("images/a/Containerfile", True),
        ("images/a/image.yaml", True),
        ("images/a/playbook.yml", False),
        ("clusters/c/cluster.yaml", True),
        ("clusters/c/machineconfigs/99-x.yaml", True),
        ("clusters/c/machineconfigs/README.md", False),
        ("README.md", False),
    ],
)
def test_interesting(path: str, interesting: bool) -> None:
    assert repo.interesting(path) is interesting
