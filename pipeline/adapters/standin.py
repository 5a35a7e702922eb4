"""A stand-in OS base image for machines that cannot pull Fedora CoreOS / RHCOS: a static
busybox with every applet linked, plus `ostree`, `rpm-ostree` and `bootc` shims that log their
arguments and succeed, built from scratch with buildah and pushed to a registry. Used by
`layering up` (the local sandbox) and by the test fixtures. Does file, process and network I/O.

    image = standin.build(buildah=[...], repository="127.0.0.1:5000/os/fcos-stand-in",
                          workdir=path, env=environment)
    image.ref  # 127.0.0.1:5000/os/fcos-stand-in@sha256:…
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import PermanentError

REPOSITORY = "os/fcos-stand-in"
SHIMS = ("ostree", "rpm-ostree", "bootc")

_SHIM = """#!/bin/sh
# stand-in for {name}: logs its arguments and succeeds
echo "{name} $*" >> /var/log/layering-shims.log
echo "{name} (layering test shim) $*"
exit 0
"""


@dataclass(frozen=True)
class BaseImage:
    repository: str  # 127.0.0.1:PORT/os/fcos-stand-in
    digest: str  # sha256:…

    @property
    def ref(self) -> str:
        return f"{self.repository}@{self.digest}"


def _run(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, check=False, env=dict(env) if env else None
    )
    if result.returncode != 0:
        raise PermanentError(
            f"{' '.join(argv[:6])} failed ({result.returncode}): {result.stderr[-2000:].strip()}"
        )
    return result.stdout


def busybox_path() -> str:
    """A static busybox (Debian `busybox-static`): dynamic ones need libraries we do not copy."""
    found = shutil.which("busybox")
    if found is None:
        raise PermanentError("busybox not found: install the Debian package busybox-static")
    return found


def make_rootfs(directory: Path) -> Path:
    """A tiny OS root: static busybox with every applet linked, plus ostree/rpm-ostree shims."""
    busybox = busybox_path()
    for sub in ("bin", "sbin", "usr/bin", "etc", "var/log", "tmp", "root"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, directory / "bin" / "busybox")
    for applet in _run([busybox, "--list"]).split():
        link = directory / "bin" / applet
        if applet != "busybox" and not link.exists() and not link.is_symlink():
            link.symlink_to("busybox")
    for name in SHIMS:
        shim = directory / "usr" / "bin" / name
        shim.write_text(_SHIM.format(name=name))
        shim.chmod(0o755)
    (directory / "etc" / "os-release").write_text(
        'NAME="Fedora CoreOS stand-in"\nID=fedora\nVARIANT_ID=coreos\n'
    )
    (directory / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (directory / "tmp").chmod(0o1777)
    return directory


def build(
    *,
    buildah: Sequence[str],
    repository: str,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    tag: str = "latest",
) -> BaseImage:
    """Build the stand-in from scratch and push it to `repository:tag` (`buildah` is the
    command with its storage options, e.g. `buildah --root R --runroot RR --storage-driver
    vfs`); returns the pushed digest."""
    workdir.mkdir(parents=True, exist_ok=True)
    rootfs = workdir / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    make_rootfs(rootfs)
    container = _run([*buildah, "from", "--quiet", "scratch"], env=env).strip()
    _run([*buildah, "copy", "--quiet", container, f"{rootfs}/", "/"], env=env)
    _run(
        [*buildah, "config", "--label", "org.opencontainers.image.title=fcos-stand-in", container],
        env=env,
    )
    local = "localhost/fcos-stand-in:latest"
    _run([*buildah, "commit", "--quiet", "--rm", container, local], env=env)
    digestfile = workdir / "digest"
    _run(
        [*buildah, "push", "--digestfile", str(digestfile), local, f"docker://{repository}:{tag}"],
        env=env,
    )
    return BaseImage(repository, digestfile.read_text().strip())
