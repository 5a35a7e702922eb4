"""The storage driver choice, the probe's reading of buildah, the workers' reports for /readyz
and the pull policy that keeps the layer cache warm: tables over pure functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.adapters import buildah
from pipeline.core import builds, storage_driver
from pipeline.core.errors import PermanentError
from pipeline.core.settings import Settings

BASE = "registry.example.com/os/fcos@sha256:" + "a" * 64
INFO = {
    "store": {
        "GraphDriverName": "overlay",
        "GraphStatus": {"Backing Filesystem": "extfs", "Native Overlay Diff": "true"},
    }
}
OVERLAY_ON_OVERLAY = (
    "Error: 'overlay' is not supported over overlayfs, a mount_program is required: "
    "backing file system is unsupported for this graph driver\n"
)


def test_the_setting_defaults_to_auto_and_refuses_other_drivers() -> None:
    assert Settings().buildah_storage_driver == "auto"
    assert Settings(buildah_storage_driver="overlay").buildah_storage_driver == "overlay"
    with pytest.raises(ValueError, match="buildah_storage_driver"):
        Settings(buildah_storage_driver="btrfs")


@pytest.mark.parametrize(
    ("stderr", "lacks"),
    [
        (OVERLAY_ON_OVERLAY, "a file system overlay cannot stack on"),
        ("failed to GetDriver graph overlay /r: driver not supported", "no overlay file system"),
        ("mount overlay: operation not permitted", "may not mount overlay"),
        ('database storage graph driver "vfs" does not match our graph driver', "another driver"),
        ("something else", "overlay storage did not initialise"),
    ],
)
def test_what_the_host_lacks_is_read_from_buildah(stderr: str, lacks: str) -> None:
    probe = storage_driver.failed(stderr, 125)
    assert not probe.ok
    assert lacks in probe.reason
    assert "buildah exit 125" in probe.reason


def test_info_with_native_diff_is_overlay() -> None:
    probe = storage_driver.judged(json.dumps(INFO))
    assert probe == storage_driver.Probe(True, native_diff=True, backing="extfs")
    assert probe.detail == "native overlay diff, on extfs"
    assert not storage_driver.judged("not json").ok
    other = {"store": {"GraphDriverName": "vfs"}}
    assert "not overlay" in storage_driver.judged(json.dumps(other)).reason


WORKS = storage_driver.Probe(True, native_diff=True, backing="extfs")
FAILS = storage_driver.failed(OVERLAY_ON_OVERLAY, 125)


@pytest.mark.parametrize(
    ("setting", "probe", "driver", "warning", "says"),
    [
        ("auto", WORKS, "overlay", False, "auto, the probe showed native overlay diff"),
        ("overlay", WORKS, "overlay", False, "LAYERING_BUILDAH_STORAGE_DRIVER=overlay"),
        ("auto", FAILS, "vfs", True, "auto fell back to vfs"),
        ("vfs", None, "vfs", False, "LAYERING_BUILDAH_STORAGE_DRIVER=vfs"),
    ],
)
def test_choice(
    setting: storage_driver.Setting,
    probe: storage_driver.Probe | None,
    driver: str,
    warning: bool,
    says: str,
) -> None:
    choice = storage_driver.choose(setting, probe)
    assert (choice.driver, choice.warning) == (driver, warning)
    assert says in choice.message
    if warning:
        assert "a file system overlay cannot stack on" in choice.message
        assert "LAYERING_BUILDAH_ROOT" in choice.message  # the fix


def test_explicit_overlay_that_does_not_work_stops_with_the_fix() -> None:
    with pytest.raises(PermanentError) as raised:
        storage_driver.choose("overlay", FAILS)
    message = str(raised.value)
    assert message.startswith("LAYERING_BUILDAH_STORAGE_DRIVER=overlay, but overlay storage")
    assert "emptyDir" in message
    assert "LAYERING_BUILDAH_STORAGE_DRIVER=vfs" in message


def test_leftover_images_of_another_driver_are_named_with_the_fix() -> None:
    assert storage_driver.leftover_warning("overlay", []) is None
    assert storage_driver.leftover_warning("overlay", ["overlay"]) is None
    warning = storage_driver.leftover_warning("overlay", ["vfs", "overlay"])
    assert warning is not None
    assert "stored with vfs" in warning
    assert "rmi --all" in warning


def report(name: str, seen: float) -> storage_driver.WorkerReport:
    return storage_driver.WorkerReport(name, "overlay", "oci", "host-a", seen)


def test_reports_round_trip_and_age_out() -> None:
    fresh = report("b@h", 1000.0)
    assert storage_driver.WorkerReport.from_json(fresh.to_json()) == fresh
    assert storage_driver.WorkerReport.from_json(b"{") is None
    assert storage_driver.WorkerReport.from_json('{"storage_driver": "zfs"}') is None
    entries = {
        b"b@h": fresh.to_json(),
        b"a@h": report("a@h", 1000.0 - storage_driver.PRESENCE_TTL_SECONDS).to_json(),
        b"old@h": report("old@h", 1000.0 - storage_driver.PRESENCE_TTL_SECONDS - 1).to_json(),
        b"junk": b"not json",
    }
    assert [r.worker for r in storage_driver.live_workers(entries, now=1000.0)] == ["a@h", "b@h"]
    live = storage_driver.live_workers(entries, now=1010.0)
    assert [r.worker for r in live] == ["b@h"]
    assert live[0].readiness(1010.0) == {
        "worker": "b@h",
        "storage_driver": "overlay",
        "isolation": "oci",
        "hostname": "host-a",
        "seen_seconds_ago": 10.0,
    }
    assert sorted(storage_driver.stale_fields(entries, now=1000.0)) == [b"junk", b"old@h"]


@pytest.mark.parametrize(
    ("containerfile", "pull"),
    [
        (f"FROM {BASE}\nRUN true\n", ["--pull=missing"]),
        (f"FROM {BASE} AS build\nRUN true\nFROM build\n", ["--pull=missing"]),
        (f"FROM scratch AS files\nFROM {BASE}\nCOPY --from=files / /\n", ["--pull=missing"]),
        (f"ARG BASE_IMAGE\nFROM {BASE}\n", ["--pull=missing"]),
        # a tag may move: buildah's default asks the registry
        (f"FROM quay.io/x/builder:latest AS b\nFROM {BASE}\n", []),
        ("FROM ${UNSET}\n", []),
        ("RUN before from\n", []),
    ],
)
def test_pull_policy_skips_the_registry_only_for_digests(
    containerfile: str, pull: list[str]
) -> None:
    assert buildah.pull_argv(containerfile) == pull


def test_build_argv_pulls_a_pinned_base_only_when_missing() -> None:
    spec = builds.BuildSpec(
        image="hello",
        cluster="dev",
        target="registry.example.com/layering/hello:0123456789abcdef0123",
        build_key="0123456789abcdef0123",
        base=BASE,
        containerfile=f"FROM {BASE}\nRUN true\n",
        context=Path("/ctx"),
        build_args={},
        labels={},
    )
    config = buildah.BuildahConfig(storage_driver="overlay")
    argv = buildah.build_argv(config, spec, containerfile=Path("/C"), iidfile=Path("/i"))
    assert argv[:2] == ["--storage-driver", "overlay"]
    assert "--pull=missing" in argv
