"""A stand-in OS base image for machines that cannot pull Fedora CoreOS / RHCOS: a static
busybox with every applet linked, plus `ostree`, `rpm-ostree` and `bootc` shims, built from
scratch with buildah and pushed to a registry. Used by `layering up` (the local sandbox) and by
the test fixtures. Does file, process and network I/O.

It carries a real rpm database, as FCOS does (/usr/lib/sysimage/rpm, /usr/share/rpm a link to
it), so the package diff (adapters/image_changes.py) is tested for real: the host's `rpm` with
the libraries `ldd` names is copied in, tiny packages are made with the host's `rpmbuild`
(standin_packages.py: one run, cached by spec hash), the base set is installed into the root
with `rpm --root`, and the stand-in repository of packages is kept in the image under
/usr/share/layering-standin/rpms/. The `rpm-ostree` shim installs, removes and replaces those
packages with the real rpm; `ostree` and `bootc` log their arguments and succeed.

    image = standin.build(buildah=[...], repository="127.0.0.1:5000/os/fcos-stand-in",
                          workdir=path, env=environment)
    image.ref  # 127.0.0.1:5000/os/fcos-stand-in@sha256:…
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.adapters import standin_packages
from pipeline.core.errors import PermanentError

REPOSITORY = "os/fcos-stand-in"
SHIMS = ("ostree", "rpm-ostree", "bootc")
RPMDB = "/usr/lib/sysimage/rpm"
PACKAGES_DIR = "/usr/share/layering-standin/rpms"
# what the copied rpm reads of its configuration (its helper scripts need perl or bash)
RPM_CONFIG = ("rpmrc", "macros", "macros.d", "platform", "rpmpopt-*")

_SHIM = """#!/bin/sh
# stand-in for {name}: prints its arguments and succeeds (a file under /var/log would be
# content the node never sees: LAY107)
echo "{name} (layering test shim) $*"
exit 0
"""

# rpm-ostree: the first stdout line stays what every shim prints (tests read it); rpm's own
# output goes to stderr. An unknown or remote name installs nothing and says so.
_RPM_OSTREE = """#!/bin/sh
# stand-in for rpm-ostree: installs, removes and replaces the stand-in repository's packages
# with the real rpm; prints its arguments
echo "rpm-ostree (layering test shim) $*"
REPO=@PACKAGES_DIR@
rpmdb() { /usr/bin/rpm --dbpath @RPMDB@ "$@" 1>&2; }
install_one() {
    case "$1" in
        -*) ;;
        *://*) echo "rpm-ostree (layering test shim): $1 not fetched; nothing installed" ;;
        */*) rpmdb -U --nodeps --replacepkgs "$1" || exit 1 ;;
        *[!A-Za-z0-9._+-]*) echo "rpm-ostree (layering test shim): bad name $1" ; exit 1 ;;
        *) if [ -f "$REPO/$1.rpm" ]; then
               rpmdb -U --nodeps --replacepkgs "$REPO/$1.rpm" || exit 1
           else
               echo "rpm-ostree (layering test shim): no package $1 in the stand-in" \\
                    "repository; nothing installed"
           fi ;;
    esac
}
case "$1" in
    install)
        shift
        for arg in "$@"; do install_one "$arg"; done ;;
    override)
        action="$2"; shift 2
        while [ $# -gt 0 ]; do
            case "$action:$1" in
                *:--install) install_one "$2"; shift ;;
                *:--install=*) install_one "${1#--install=}" ;;
                *:-*) ;;
                remove:*) rpmdb -e --nodeps "$1" || exit 1 ;;
                replace:*) rpmdb -U --nodeps --oldpackage "$1" || exit 1 ;;
            esac
            shift
        done ;;
esac
exit 0
""".replace("@PACKAGES_DIR@", PACKAGES_DIR).replace("@RPMDB@", RPMDB)


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


def make_rootfs(directory: Path, *, package_cache: Path | None = None) -> Path:
    """A tiny OS root: static busybox with every applet linked, the host's rpm with an rpm
    database holding the base set, the stand-in repository, and the shims."""
    busybox = busybox_path()
    # FCOS's top-level directories: a RUN's mount points are then no new ones (LAY112)
    tops = ("bin", "sbin", "etc", "tmp", "run", "dev", "proc", "sys")
    for sub in (*tops, "usr/bin", "usr/lib", "usr/lib64", "var/log", "var/lib"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    # as on FCOS: the content lint (LAY101) fails an image whose /var/run is not this link
    if not (directory / "var" / "run").is_symlink():
        (directory / "var" / "run").symlink_to("../run")
    (directory / "root").mkdir(exist_ok=True)
    for top, usr in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
        if not (directory / top).is_symlink():
            (directory / top).symlink_to(usr)
    shutil.copy2(busybox, directory / "bin" / "busybox")
    for applet in _run([busybox, "--list"]).split():
        link = directory / "bin" / applet
        # busybox's own rpm applet would come first on PATH: the real rpm is in /usr/bin
        if applet not in ("busybox", "rpm", "rpm2cpio") and not link.is_symlink():
            link.symlink_to("busybox")
    for name in SHIMS:
        shim = directory / "usr" / "bin" / name
        shim.write_text(_RPM_OSTREE if name == "rpm-ostree" else _SHIM.format(name=name))
        shim.chmod(0o755)
    copy_rpm(directory)
    cache = package_cache or Path(tempfile.gettempdir()) / "layering-standin-rpms"
    install_packages(directory, standin_packages.build(cache=cache))
    (directory / "etc" / "os-release").write_text(
        'NAME="Fedora CoreOS stand-in"\nID=fedora\nVARIANT_ID=coreos\n'
    )
    (directory / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    # there on FCOS: else every build's RUN leaves buildah's empty mount points as "added"
    (directory / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    (directory / "etc" / "hostname").write_text("")
    (directory / "etc" / "resolv.conf").write_text("")
    (directory / "tmp").chmod(0o1777)
    return directory


def copy_rpm(directory: Path) -> None:
    """The host's rpm, the shared libraries `ldd` names (and the dynamic loader), and rpm's
    configuration, at the same paths under `directory` (/lib is /usr/lib there, as on FCOS)."""
    rpm = shutil.which("rpm")
    if rpm is None:
        raise PermanentError("rpm not found: install the Debian package rpm")
    _place(directory, Path(rpm), "/usr/bin/rpm")
    for library in re.findall(r"(/\S+) \(0x", _run(["ldd", rpm])):
        _place(directory, Path(library), _in_usr(library))
    config = Path("/usr/lib/rpm")
    for pattern in RPM_CONFIG:
        for path in config.glob(pattern):
            target = directory / "usr/lib/rpm" / path.name
            if path.is_dir():
                shutil.copytree(path, target, symlinks=True, dirs_exist_ok=True)
            else:
                _place(directory, path, f"/usr/lib/rpm/{path.name}")
    # Debian's rpm keeps its database in ~/.rpmdb (by bash); FCOS's is RPMDB
    (directory / "etc/rpm").mkdir(parents=True, exist_ok=True)
    (directory / "etc/rpm/macros").write_text(f"%_dbpath {RPMDB}\n")


def _in_usr(path: str) -> str:
    for top in ("/lib/", "/lib64/"):
        if path.startswith(top):
            return "/usr" + path
    return path


def _place(directory: Path, source: Path, path: str) -> None:
    target = directory / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), target)


def install_packages(directory: Path, built: standin_packages.Built) -> None:
    """The base set installed into the root's rpm database (with its files) by the host's rpm,
    and the repository's packages under PACKAGES_DIR by name."""
    database = directory / RPMDB.lstrip("/")
    database.mkdir(parents=True, exist_ok=True)
    (directory / "usr/share").mkdir(parents=True, exist_ok=True)
    if not (directory / "usr/share/rpm").is_symlink():
        (directory / "usr/share/rpm").symlink_to("../lib/sysimage/rpm")
    rpm = shutil.which("rpm") or "rpm"
    _run(
        [rpm, "--root", str(directory), "--dbpath", RPMDB, "-U", "--nodeps", "--noscripts"]
        + [str(path) for path in built.base],
        env={**os.environ, "LC_ALL": "C"},
    )
    repository = directory / PACKAGES_DIR.lstrip("/")
    repository.mkdir(parents=True, exist_ok=True)
    for name, path in built.repository.items():
        shutil.copy2(path, repository / f"{name}.rpm")
    for alias, name in standin_packages.ALIASES.items():
        (repository / f"{alias}.rpm").symlink_to(f"{name}.rpm")


def build(
    *,
    buildah: Sequence[str],
    repository: str,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    tag: str = "latest",
    package_cache: Path | None = None,
) -> BaseImage:
    """Build the stand-in from scratch and push it to `repository:tag` (`buildah` is the
    command with its storage options, e.g. `buildah --root R --runroot RR --storage-driver
    vfs`); returns the pushed digest."""
    workdir.mkdir(parents=True, exist_ok=True)
    rootfs = workdir / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    make_rootfs(rootfs, package_cache=package_cache)
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
