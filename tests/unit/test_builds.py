from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core import buildah_output, builds, redaction, repo
from pipeline.core.builds import BuildState
from pipeline.core.errors import PermanentError

BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64


def record(state: BuildState = BuildState.QUEUED) -> builds.BuildRecord:
    return builds.BuildRecord(id="b1", image="img", cluster="c", state=state, created_at=1.0)


@pytest.mark.parametrize(
    ("start", "target", "allowed"),
    [
        (BuildState.QUEUED, BuildState.RUNNING, True),
        (BuildState.QUEUED, BuildState.SKIPPED, True),
        (BuildState.QUEUED, BuildState.FAILED, True),
        (BuildState.QUEUED, BuildState.CANCELLED, True),
        (BuildState.QUEUED, BuildState.SUCCEEDED, False),
        (BuildState.RUNNING, BuildState.SUCCEEDED, True),
        (BuildState.RUNNING, BuildState.QUEUED, True),
        (BuildState.RUNNING, BuildState.RUNNING, True),
        (BuildState.SUCCEEDED, BuildState.RUNNING, False),
        (BuildState.FAILED, BuildState.QUEUED, False),
        (BuildState.SKIPPED, BuildState.FAILED, False),
        (BuildState.CANCELLED, BuildState.RUNNING, False),
    ],
)
def test_transitions(start: BuildState, target: BuildState, allowed: bool) -> None:
    if allowed:
        assert builds.transition(record(start), target, now=5.0).state is target
    else:
        with pytest.raises(builds.InvalidTransition, match=f"from {start} to {target}"):
            builds.transition(record(start), target, now=5.0)


def test_timestamps_follow_the_state() -> None:
    running = builds.start(record(), now=2.0)
    assert (running.started_at, running.finished_at, running.updated_at) == (2.0, None, 2.0)
    done = builds.succeed(running, digest="sha256:" + "b" * 64, now=3.0)
    assert (done.started_at, done.finished_at, done.digest) == (2.0, 3.0, "sha256:" + "b" * 64)
    failed = builds.fail(running, error="boom", step="STEP 2/3: RUN x", line=4, now=4.0)
    assert (failed.failing_step, failed.failing_line, failed.finished_at) == (
        "STEP 2/3: RUN x",
        4,
        4.0,
    )
    assert builds.begin_attempt(record(), now=9.0).attempts == 1


def test_record_round_trips_and_names_its_reference() -> None:
    done = builds.succeed(
        builds.start(record(), now=1.0), digest="sha256:" + "c" * 64, now=2.0
    ).__class__(
        id="b1",
        image="img",
        cluster="c",
        state=BuildState.SUCCEEDED,
        target="127.0.0.1:5000/team/img:0123456789abcdef0123",
        digest="sha256:" + "c" * 64,
    )
    assert builds.BuildRecord.from_dict(done.to_dict()) == done
    assert done.to_dict()["state"] == "succeeded"
    assert done.reference == "127.0.0.1:5000/team/img@sha256:" + "c" * 64
    assert builds.BuildRecord.from_dict({**done.to_dict(), "unknown": 1}) == done


@pytest.mark.parametrize("build_id", ["", "a b", "-x", "x/y", "a;b"])
def test_build_ids_are_plain(build_id: str) -> None:
    with pytest.raises(ValueError, match="build id"):
        builds.queued(build_id, image="i", cluster="c", now=0)


def _cluster() -> repo.Cluster:
    from pipeline.core import names

    return repo.Cluster(
        name="nonprod",
        environment="nonprod",
        base_image=names.parse_image_ref(BASE),
        registry="registry.example.com/layering",
        pools={"worker": "firewalld"},
    )


def test_build_spec_pins_the_base_and_labels_the_image() -> None:
    image = repo.Image(
        name="firewalld",
        containerfile="ARG BASE_IMAGE=x\nFROM ${BASE_IMAGE}\nRUN echo hi\n",
        settings=repo.ImageSettings.model_validate({"buildArgs": {"A": "$(id)"}}),
        tree_id="e" * 40,
    )
    spec = builds.build_spec(
        image=image, cluster=_cluster(), context=Path("/ctx"), commit_sha="f" * 40
    )
    assert spec.containerfile == f"ARG BASE_IMAGE=x\nFROM {BASE}\nRUN echo hi\n"
    assert spec.target == f"registry.example.com/layering/firewalld:{spec.build_key[:20]}"
    assert spec.build_args == {"A": "$(id)", "BASE_IMAGE": BASE}
    assert spec.labels == {
        "org.opencontainers.image.revision": "f" * 40,
        "org.opencontainers.image.base.name": BASE,
        "org.opencontainers.image.base.digest": "sha256:" + "a" * 64,
        "layering.image": "firewalld",
        "layering.cluster-base": BASE,
        "layering.build-key": spec.build_key,
    }


def test_build_spec_refuses_a_missing_containerfile() -> None:
    image = repo.Image(name="firewalld", containerfile=None, tree_id="e" * 40)
    with pytest.raises(PermanentError, match="images/firewalld/Containerfile: missing"):
        builds.build_spec(image=image, cluster=_cluster(), context=Path("/ctx"))


@pytest.mark.parametrize(
    ("line", "step"),
    [
        ("STEP 2/4: RUN make", buildah_output.Step(2, 4, "RUN make")),
        ("[2/3] STEP 1/5: FROM base AS b", buildah_output.Step(1, 5, "FROM base AS b", 2, 3)),
        ("  STEP 10/10: LABEL a=b", buildah_output.Step(10, 10, "LABEL a=b")),
        ("COMMIT x", None),
        ("a STEP 1/2: RUN x", None),
    ],
)
def test_parse_step(line: str, step: buildah_output.Step | None) -> None:
    assert buildah_output.parse_step(line) == step


MULTI = """\
ARG BASE_IMAGE
FROM quay.io/x/builder@sha256:{d} AS build
RUN make \\
    all
FROM ${{BASE_IMAGE}}
# a comment is not a step
ARG X
COPY --from=build /out /out
RUN ostree container commit
""".format(d="1" * 64)


@pytest.mark.parametrize(
    ("stage", "number", "line"),
    [(1, 1, 2), (1, 2, 3), (2, 1, 5), (2, 2, 7), (2, 3, 8), (2, 4, 9), (2, 5, None), (3, 1, None)],
)
def test_step_line_maps_a_step_to_its_containerfile_line(
    stage: int, number: int, line: int | None
) -> None:
    step = buildah_output.Step(number, 9, "X", stage, 2)
    assert buildah_output.step_line(MULTI, step) == line


def test_failed_instruction_reads_buildahs_error() -> None:
    lines = ["STEP 2/2: RUN false", 'Error: building at STEP "RUN false": exit status 1']
    assert buildah_output.failed_instruction(lines) == "RUN false"
    assert buildah_output.last_step(lines) == buildah_output.Step(2, 2, "RUN false")


@pytest.mark.parametrize(
    ("output", "kind"),
    [
        ("reading manifest abc in h/x: manifest unknown: manifest unknown", "missing"),
        ("reading manifest t in h/x: name unknown: repository name not known", "missing"),
        (
            'pinging container registry h: Get "http://h/v2/": dial tcp: connection refused',
            "temporary",
        ),
        ("received unexpected HTTP status: 503 Service Unavailable", "temporary"),
        ("read tcp 1.2.3.4:5->6.7.8.9:443: read: connection reset by peer", "temporary"),
        ("net/http: TLS handshake timeout", "temporary"),
        ("toomanyrequests: rate limit", "temporary"),
        (
            'Get "https://quay.io/v2/": dial tcp: lookup quay.io on 10.0.0.1:53: no such host',
            "temporary",
        ),
        ("unauthorized: authentication required", "auth"),
        ("requested access to the resource is denied", "auth"),
        ("invalid reference format", "other"),
    ],
)
def test_classify_failures(output: str, kind: str) -> None:
    assert buildah_output.classify(output).value == kind


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("fetch https://user:tok123456@github.com/o/r", (), "fetch https://***@github.com/o/r"),
        ("redis://:hunter22@127.0.0.1:6379/0", (), "redis://***@127.0.0.1:6379/0"),
        ("token ghp_abcdef123 used", ("ghp_abcdef123",), "token *** used"),
        ("short abc stays", ("abc",), "short abc stays"),
        ("no secrets here", ("",), "no secrets here"),
    ],
)
def test_scrub(text: str, secrets: tuple[str, ...], expected: str) -> None:
    assert redaction.scrub(text, secrets) == expected


def test_url_passwords() -> None:
    assert redaction.url_passwords("redis://:pw1@h/0 https://u:pw2@x https://tok@y") == [
        "pw1",
        "pw2",
        "tok",
    ]
