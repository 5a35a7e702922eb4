"""run_build against fakes of its ports, and the buildah argument lists (no buildah run)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.adapters import buildah, credentials, local_builds, source
from pipeline.adapters.environment import load_settings
from pipeline.core import builds, ports
from pipeline.core.errors import BuildFailed, PermanentError, TemporaryError
from pipeline.flows import build as build_flow
from tests.plugins.builds import BaseImage, write_repository

BASE = "registry.example.com/os/base@sha256:" + "a" * 64
DIGEST = "sha256:" + "d" * 64


class FakeBuilder:
    def __init__(self, fail: Exception | None = None, *, entitlement: bool = True) -> None:
        self.calls: list[str] = []
        self.fail = fail
        self.entitlement = entitlement

    def build(self, spec: builds.BuildSpec, *, on_line: Callable[[str], None]) -> str:
        self.calls.append(f"build {spec.target}")
        on_line("STEP 1/2: FROM " + spec.base)
        if self.fail is not None:
            raise self.fail
        return "sha256:" + "1" * 64

    def push(self, spec: builds.BuildSpec, *, on_line: Callable[[str], None]) -> str:
        self.calls.append(f"push {spec.target}")
        return DIGEST

    def discard(self, spec: builds.BuildSpec, *, on_line: Callable[[str], None]) -> None:
        self.calls.append(f"discard {spec.target}")

    def has_entitlement(self) -> bool:
        return self.entitlement


class FakeRegistry:
    """Answers each tag lookup in turn; the image under a tag carries `labels`."""

    def __init__(
        self, answers: list[str | Exception | None], labels: Mapping[str, str] | None = None
    ) -> None:
        self.answers = answers
        self.labels = dict(labels or {})

    def digest_of(self, reference: str) -> str | None:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def image_of(self, reference: str) -> builds.RegistryImage | None:
        digest = self.digest_of(reference)
        return None if digest is None else builds.RegistryImage(digest, self.labels)


@dataclass
class Built:
    """ports.BuiltImages in memory."""

    recorded: dict[tuple[str, str], builds.BuiltImage] = field(default_factory=dict)

    def record_built(self, built: builds.BuiltImage) -> None:
        self.recorded[(built.build_key, built.repository)] = built

    def built(self, build_key: str, repository: str) -> builds.BuiltImage | None:
        return self.recorded.get((build_key, repository))


def labels_of(checkout: Path) -> dict[str, str]:
    """The labels the build of images/hello for cluster dev puts on its image."""
    with source.CheckoutLoader().checkout(checkout, image="hello", commit_sha=None) as loaded:
        spec = builds.build_spec(
            image=loaded.repository.images["hello"],
            cluster=loaded.repository.clusters["dev"],
            context=loaded.context,
        )
    return dict(spec.labels)


class BusyLocks:
    """Another holder has the key: on_wait is called, then the lock is granted."""

    def __init__(self) -> None:
        self.waited = False

    @contextmanager
    def hold(self, build_key: str, *, on_wait: Callable[[], None]) -> Iterator[None]:
        on_wait()
        self.waited = True
        yield


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    return write_repository(
        tmp_path,
        base=BaseImage("registry.example.com/os/base", "sha256:" + "a" * 64),
        registry="registry.example.com/layering",
        images={
            "hello": {
                "Containerfile": "FROM registry.example.com/os/base\nRUN echo hi\nRUN false\n"
            }
        },
        clusters={"dev": {"pools": {"worker": "hello"}}},
    )


def run(
    checkout: Path,
    *,
    builder: FakeBuilder,
    registry: FakeRegistry,
    locks: ports.KeyLocks | None = None,
    final_attempt: bool = True,
    records: local_builds.MemoryRecords | None = None,
    built: Built | None = None,
    **settings: object,
) -> tuple[builds.BuildRecord, local_builds.MemoryRecords]:
    records = records or local_builds.MemoryRecords()
    configured = load_settings(**settings)
    result = build_flow.run_build(
        configured,
        builds.BuildRequest(source=checkout, image="hello", cluster="dev"),
        build_id="b1",
        records=records,
        sources=source.CheckoutLoader(),
        builder=builder,
        registry=registry,
        locks=locks or local_builds.LocalLocks(),
        secrets=credentials.secret_values(configured),
        built=built,
        final_attempt=final_attempt,
        clock=lambda: 100.0,
    )
    return result, records


def test_builds_and_pushes_when_the_tag_is_missing(checkout: Path) -> None:
    builder = FakeBuilder()
    record, records = run(checkout, builder=builder, registry=FakeRegistry([None]))
    assert record.state is builds.BuildState.SUCCEEDED
    assert record.digest == DIGEST
    assert record.reference == f"registry.example.com/layering/hello@{DIGEST}"
    assert [call.split()[0] for call in builder.calls] == ["build", "push", "discard"]
    assert records.logs["b1"][-1].startswith("pushed registry.example.com/layering/hello:")


def test_existing_tag_skips_without_building(checkout: Path) -> None:
    builder, built = FakeBuilder(), Built()
    registry = FakeRegistry([DIGEST], labels_of(checkout))
    record, _ = run(checkout, builder=builder, registry=registry, built=built)
    assert (record.state, record.digest, builder.calls) == (builds.BuildState.SKIPPED, DIGEST, [])
    # the digest reused is recorded for the key, as a pushed one is
    ((key, repository),) = built.recorded
    assert (key, repository) == (record.build_key, "registry.example.com/layering/hello")
    assert built.recorded[(key, repository)].digest == DIGEST


@pytest.mark.parametrize(
    ("labels", "said"),
    [
        ({}, "its config has no layering.build-key label"),
        ({builds.LABEL_BUILD_KEY: "0" * 64}, f"its layering.build-key label is {'0' * 64}, not "),
        (
            {builds.LABEL_BASE_DIGEST: "sha256:" + "b" * 64},
            "its org.opencontainers.image.base.digest label is sha256:bbb",
        ),
    ],
    ids=["no-labels", "other-key", "other-base"],
)
def test_a_tag_without_this_builds_labels_is_built_over(
    checkout: Path, labels: dict[str, str], said: str
) -> None:
    builder, built = FakeBuilder(), Built()
    registry = FakeRegistry([DIGEST.replace("d", "e")], labels_of(checkout) | labels)
    if not labels:
        registry.labels = {}
    record, records = run(checkout, builder=builder, registry=registry, built=built)
    assert (record.state, record.digest) == (builds.BuildState.SUCCEEDED, DIGEST)
    assert [call.split()[0] for call in builder.calls] == ["build", "push", "discard"]
    assert any(said in line and "building it again" in line for line in records.logs["b1"])
    assert [b.digest for b in built.recorded.values()] == [DIGEST]


def test_a_tag_moved_from_what_the_build_recorded_is_built_over(checkout: Path) -> None:
    builder, built = FakeBuilder(), Built()
    registry = FakeRegistry([DIGEST], labels_of(checkout))
    first, _ = run(checkout, builder=builder, registry=registry, built=built)
    assert first.state is builds.BuildState.SKIPPED
    moved = "sha256:" + "f" * 64
    registry = FakeRegistry([moved], labels_of(checkout))
    record, records = run(checkout, builder=builder, registry=registry, built=built)
    assert record.state is builds.BuildState.SUCCEEDED
    assert f"the build of this key recorded {DIGEST}, not {moved}" in "\n".join(records.logs["b1"])


def test_a_waiter_reuses_the_digest_the_holder_pushed(checkout: Path) -> None:
    builder, locks = FakeBuilder(), BusyLocks()
    registry = FakeRegistry([None, DIGEST], labels_of(checkout))
    record, records = run(checkout, builder=builder, registry=registry, locks=locks)
    assert (record.state, record.digest, builder.calls) == (builds.BuildState.SKIPPED, DIGEST, [])
    assert any("waiting for it" in line for line in records.logs["b1"])


def test_finished_records_are_returned_unchanged(checkout: Path) -> None:
    records = local_builds.MemoryRecords()
    done = builds.BuildRecord(id="b1", image="hello", cluster="dev", state=builds.BuildState.FAILED)
    records.save(done)
    builder = FakeBuilder()
    record, _ = run(checkout, builder=builder, registry=FakeRegistry([None]), records=records)
    assert record == done
    assert builder.calls == []


def test_failed_step_is_named_with_its_line(checkout: Path) -> None:
    failure = BuildFailed(
        "STEP 3/3: RUN false failed (exit 1)", step="STEP 3/3: RUN false", log_tail="boom"
    )
    record, _ = run(checkout, builder=FakeBuilder(failure), registry=FakeRegistry([None]))
    assert record.state is builds.BuildState.FAILED
    assert (record.failing_step, record.failing_line) == ("STEP 3/3: RUN false", 3)
    assert record.error.startswith("images/hello/Containerfile:3: STEP 3/3: RUN false failed")
    assert record.error.endswith("--- output tail ---\nboom")


def test_temporary_errors_requeue_until_the_last_attempt(checkout: Path) -> None:
    down = TemporaryError("registry registry.example.com unavailable: connection refused")
    records = local_builds.MemoryRecords()
    with pytest.raises(TemporaryError):
        run(
            checkout,
            builder=FakeBuilder(),
            registry=FakeRegistry([down]),
            final_attempt=False,
            records=records,
        )
    assert records.records["b1"].state is builds.BuildState.QUEUED
    record, _ = run(checkout, builder=FakeBuilder(), registry=FakeRegistry([down]), records=records)
    assert record.state is builds.BuildState.FAILED
    assert record.attempts == 2
    assert record.error == f"gave up after 2 attempt(s): {down}"


def test_entitlement_without_its_directory_fails_clearly(checkout: Path, tmp_path: Path) -> None:
    (checkout / "images" / "hello" / "image.yaml").write_text("entitlement: true\n")
    record, _ = run(
        checkout,
        builder=FakeBuilder(entitlement=False),
        registry=FakeRegistry([None]),
        entitlement_dir=tmp_path / "missing",
    )
    assert record.state is builds.BuildState.FAILED
    assert "entitlement: true" in record.error
    assert "LAYERING_ENTITLEMENT_DIR" in record.error


def test_buildah_has_the_entitlement_only_when_its_directory_exists(tmp_path: Path) -> None:
    def builder(directory: Path | None) -> buildah.Buildah:
        return buildah.Buildah(buildah.BuildahConfig(entitlement_dir=directory))

    assert builder(tmp_path).has_entitlement()
    assert not builder(tmp_path / "missing").has_entitlement()
    assert not builder(None).has_entitlement()


def test_a_stale_planned_key_is_noted_and_the_checkout_key_built(checkout: Path) -> None:
    records = local_builds.MemoryRecords()
    record = build_flow.run_build(
        load_settings(),
        builds.BuildRequest(source=checkout, image="hello", cluster="dev", build_key="0" * 64),
        build_id="b1",
        records=records,
        sources=source.CheckoutLoader(),
        builder=FakeBuilder(),
        registry=FakeRegistry([None]),
        locks=local_builds.LocalLocks(),
        secrets=[],
        clock=lambda: 100.0,
    )
    assert record.state is builds.BuildState.SUCCEEDED
    assert record.build_key != "0" * 64
    note = f"note: planned key {'0' * 64} differs; building key {record.build_key}"
    assert note in records.logs["b1"]


def test_secrets_are_scrubbed_from_logs_and_errors(checkout: Path) -> None:
    failure = BuildFailed("x", step="", log_tail="token ghp_secret_value_1 leaked")
    record, _records = run(
        checkout,
        builder=FakeBuilder(failure),
        registry=FakeRegistry([None]),
        github_token="ghp_secret_value_1",
    )
    assert "ghp_secret_value_1" not in record.error
    assert "***" in record.error


def _spec(**changes: object) -> builds.BuildSpec:
    values: dict[str, object] = {
        "image": "hello",
        "cluster": "dev",
        "build_key": "k" * 64,
        "target": "registry.example.com/layering/hello:0123456789abcdef0123",
        "base": BASE,
        "containerfile": "FROM x\n",
        "context": Path("/ctx/images/hello"),
        "build_args": {"MSG": "$(touch /pwned); `id` && echo 'x'", "BASE_IMAGE": BASE},
        "labels": {"layering.image": "hello"},
    }
    values.update(changes)
    return builds.BuildSpec(**values)  # type: ignore[arg-type]


def test_build_argv_passes_values_as_single_arguments() -> None:
    config = buildah.BuildahConfig(root=Path("/r"), runroot=Path("/rr"), authfile=Path("/a.json"))
    argv = buildah.build_argv(config, _spec(), containerfile=Path("/t/C"), iidfile=Path("/t/i"))
    assert argv[:6] == ["--storage-driver", "vfs", "--root", "/r", "--runroot", "/rr"]
    assert "--build-arg" in argv
    assert "MSG=$(touch /pwned); `id` && echo 'x'" in argv
    assert f"BASE_IMAGE={BASE}" in argv
    assert argv[argv.index("--isolation") + 1] == "chroot"
    assert argv[argv.index("--authfile") + 1] == "/a.json"
    assert argv[argv.index("--label") + 1] == "layering.image=hello"
    assert argv[-1] == "/ctx/images/hello"
    assert "--volume" not in argv


def test_entitled_builds_mount_the_entitlement_read_only() -> None:
    config = buildah.BuildahConfig(entitlement_dir=Path("/etc/pki/entitlement"))
    argv = buildah.build_argv(
        config, _spec(entitlement=True), containerfile=Path("/C"), iidfile=Path("/i")
    )
    assert argv[argv.index("--volume") + 1] == "/etc/pki/entitlement:/etc/pki/entitlement:ro"


def test_push_argv_uses_the_digestfile_and_authfile() -> None:
    config = buildah.BuildahConfig(authfile=Path("/a.json"))
    argv = buildah.push_argv(config, _spec(), digestfile=Path("/t/d"))
    target = "registry.example.com/layering/hello:0123456789abcdef0123"
    assert argv == [
        "--storage-driver",
        "vfs",
        "push",
        "--digestfile",
        "/t/d",
        "--authfile",
        "/a.json",
        target,
        f"docker://{target}",
    ]


@pytest.mark.parametrize("target", ["-x/y:z", "reg.example.com/a b:c", "reg.example.com/$(id):t"])
def test_odd_targets_are_refused(target: str) -> None:
    with pytest.raises(Exception, match="refusing to build"):
        buildah.push_argv(buildah.BuildahConfig(), _spec(target=target), digestfile=Path("/d"))


@pytest.mark.parametrize(
    ("output", "kind", "message"),
    [
        (
            'STEP 2/2: RUN false\nError: building at STEP "RUN false": exit status 1',
            BuildFailed,
            "STEP 2/2: RUN false failed (exit 1)",
        ),
        (
            "Error: creating build container: pinging container registry registry.example.com: "
            "dial tcp: connection refused",
            TemporaryError,
            "registry registry.example.com unavailable while pulling",
        ),
        (
            "STEP 1/3: FROM quay.io/x/y@sha256:abc\nError: creating build container: "
            "reading manifest sha256:abc in quay.io/x/y: manifest unknown",
            PermanentError,
            "check baseImage in clusters/",
        ),
        (
            # what CI saw: buildah's chroot runtime could not seal its own re-exec copy
            "STEP 2/9: RUN rpm-ostree install firewalld\n"
            "Close_Fd sealing memfd copy: Device or resource busy\n"
            "subprocess exited with status 1\n"
            'Error: building at STEP "RUN rpm-ostree install firewalld": exit status 1',
            TemporaryError,
            "buildah's runtime failed before the command ran",
        ),
        (
            # the same words printed by the step's own command are the command's failure
            "STEP 2/2: RUN make\nmake: building\nClose_Fd sealing memfd copy: x\n"
            'Error: building at STEP "RUN make": exit status 2',
            BuildFailed,
            "STEP 2/2: RUN make failed",
        ),
    ],
)
def test_build_errors_are_classified(output: str, kind: type[Exception], message: str) -> None:
    from pipeline.core import buildah_output

    error = buildah.build_error(_spec(), output, buildah_output.last_step(output.splitlines()), 1)
    assert isinstance(error, kind)
    assert message in str(error)


def test_push_errors_name_the_registry() -> None:
    error = buildah.push_error(_spec(), "Error: ... 503 Service Unavailable")
    assert isinstance(error, TemporaryError)
    assert "registry registry.example.com unavailable while pushing" in str(error)
