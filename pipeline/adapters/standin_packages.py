"""The stand-in base's tiny RPMs (adapters/standin.py): two specs (the base set, installed into
the stand-in's rpm database, and the stand-in repository the `rpm-ostree` shim installs from),
built by one `rpmbuild` run on the host and cached by the specs' hash, so a test session or
`layering up` builds them once. Each package installs a file or two under /usr (some under
/etc). Does file and process I/O.

    built = standin_packages.build(cache=Path("/tmp/layering-standin-rpms"))
    built.base      # [Path(.../kernel-core-6.5.6-300.fc39.x86_64.rpm), ...]
    built.repository  # {"tmux": Path(.../tmux-3.3a-3.fc39.x86_64.rpm), ...}
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import PermanentError


@dataclass(frozen=True)
class Spec:
    name: str
    version: str
    release: str = "1.fc39"
    epoch: int | None = None
    paths: tuple[str, ...] = ()  # besides /usr/share/doc/<name>/README


# FCOS-like base set: what the stand-in's rpm database says is installed
BASE = (
    Spec("kernel", "6.5.6", "300.fc39"),
    Spec("kernel-core", "6.5.6", "300.fc39", paths=("/usr/lib/modules/6.5.6-300.fc39/vmlinuz",)),
    Spec("kernel-modules", "6.5.6", "300.fc39", paths=("/usr/lib/modules/6.5.6-300.fc39/mods",)),
    Spec("kernel-modules-core", "6.5.6", "300.fc39"),
    Spec("bash", "5.2.15", "5.fc39", paths=("/usr/bin/bash",)),
    Spec("coreutils-single", "9.3", "4.fc39"),
    Spec("vim-minimal", "9.0.1927", "1.fc39", epoch=2, paths=("/usr/bin/vi",)),
    Spec("haproxy", "2.8.0", "1.fc39", paths=("/usr/sbin/haproxy", "/etc/haproxy/haproxy.cfg")),
    Spec("openssh-server", "9.3p1", "9.fc39", paths=("/etc/ssh/sshd_config",)),
    Spec("systemd", "254.5", "2.fc39"),
)
# the stand-in repository: what the example images and the tests install (vim-minimal and
# haproxy newer than the base's, for replacements)
REPOSITORY = (
    Spec("tmux", "3.3a", "3.fc39", paths=("/usr/bin/tmux", "/etc/tmux.conf")),
    Spec("htop", "3.2.2", "2.fc39", paths=("/usr/bin/htop",)),
    Spec("fish", "3.6.1", "5.fc39", paths=("/usr/bin/fish",)),
    Spec("firewalld", "2.0.1", "1.fc39", paths=("/usr/sbin/firewalld", "/etc/firewalld/z.conf")),
    Spec("ansible-core", "2.15.5", "1.fc39", paths=("/usr/bin/ansible",)),
    Spec("libreswan", "4.12", "1.fc39", paths=("/usr/sbin/ipsec", "/etc/ipsec.conf")),
    Spec("usbguard", "1.1.2", "5.fc39", paths=("/usr/sbin/usbguard-daemon",)),
    Spec("sysstat", "12.7.4", "1.fc39", paths=("/usr/bin/sar",)),
    Spec("kernel-tools", "6.5.6", "300.fc39", paths=("/usr/bin/turbostat",)),
    Spec("kernel-rt-core", "5.14.0", "362.rt14.el9", paths=("/usr/lib/modules/rt/vmlinuz",)),
    Spec("vim-enhanced", "9.1.0", "1.fc39", epoch=2, paths=("/usr/bin/vim",)),
    Spec("vim-minimal", "9.1.0", "1.fc39", epoch=2, paths=("/usr/bin/vi",)),
    Spec("haproxy", "2.8.1", "1.fc39", paths=("/usr/sbin/haproxy", "/etc/haproxy/haproxy.cfg")),
    Spec("cockpit-system", "303", "1.fc39", paths=("/usr/share/cockpit/manifest.json",)),
)
# names the shim also accepts, as dnf resolves a Provides
ALIASES = {"vim": "vim-enhanced"}
ARCH = "x86_64"


@dataclass(frozen=True)
class Built:
    base: list[Path]
    repository: dict[str, Path]  # package name -> its rpm


def spec_text(kind: str, packages: tuple[Spec, ...]) -> str:
    lines = [
        f"Name: layering-standin-{kind}",
        "Version: 1",
        "Release: 1",
        "Summary: layering stand-in packages",
        "License: MIT",
        f"BuildArch: {ARCH}",
        "AutoReqProv: no",
        "%global debug_package %{nil}",
        "%global __os_install_post %{nil}",
        "%description",
        "Tiny packages for the layering stand-in base image.",
    ]
    install = ["%install"]
    files: list[str] = []
    for package in packages:
        lines += [f"%package -n {package.name}", f"Version: {package.version}"]
        lines += [f"Release: {package.release}"]
        lines += [f"Epoch: {package.epoch}"] if package.epoch is not None else []
        lines += [f"Summary: {package.name} (layering stand-in)"]
        lines += [f"%description -n {package.name}", f"{package.name} for the stand-in base."]
        doc = f"/usr/share/doc/{package.name}/README"
        files += [f"%files -n {package.name}"]
        for path in (*package.paths, doc):
            install.append(f"mkdir -p %{{buildroot}}{os.path.dirname(path)}")
            body = f"{package.name} {package.version}-{package.release} (layering stand-in)"
            if path.startswith(("/usr/bin/", "/usr/sbin/")):
                install.append(f"printf '#!/bin/sh\\necho \"{body}\"\\n' > %{{buildroot}}{path}")
                install.append(f"chmod 0755 %{{buildroot}}{path}")
            else:
                install.append(f"echo '{body}' > %{{buildroot}}{path}")
            files.append(f"%config(noreplace) {path}" if path.startswith("/etc/") else path)
    return "\n".join([*lines, *install, *files, ""])


def build(*, cache: Path) -> Built:
    """The packages of BASE and REPOSITORY, built once per spec hash under `cache`."""
    specs = {"base": spec_text("base", BASE), "repo": spec_text("repo", REPOSITORY)}
    digest = hashlib.sha256("\0".join(specs.values()).encode()).hexdigest()[:16]
    directory = cache / digest
    if not (directory / "done").exists():
        _rpmbuild(specs, cache=cache, directory=directory)
    return Built(
        base=[directory / "base" / _file(p) for p in BASE],
        repository={p.name: directory / "repo" / _file(p) for p in REPOSITORY},
    )


def _file(package: Spec) -> str:
    return f"{package.name}-{package.version}-{package.release}.{ARCH}.rpm"


def _rpmbuild(specs: dict[str, str], *, cache: Path, directory: Path) -> None:
    rpmbuild = shutil.which("rpmbuild")
    if rpmbuild is None:
        raise PermanentError("rpmbuild not found: install the Debian package rpm")
    cache.mkdir(parents=True, exist_ok=True)
    # built aside, then renamed: processes building at once never see half a directory
    work = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
    try:
        paths = []
        for kind, text in specs.items():
            (work / f"{kind}.spec").write_text(text)
            paths.append(str(work / f"{kind}.spec"))
        result = subprocess.run(
            [rpmbuild, "-bb", "--quiet", "--define", f"_topdir {work / 'top'}", *paths],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
        if result.returncode != 0:
            raise PermanentError(
                f"rpmbuild of the stand-in packages failed: {result.stderr[-2000:]}"
            )
        made = {p.name: p for p in (work / "top" / "RPMS" / ARCH).glob("*.rpm")}
        done = work / "out"
        for kind, packages in (("base", BASE), ("repo", REPOSITORY)):
            (done / kind).mkdir(parents=True)
            for package in packages:
                shutil.copy2(made[_file(package)], done / kind / _file(package))
        (done / "done").write_text("")
        try:
            done.rename(directory)
        except OSError:
            if not (directory / "done").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
