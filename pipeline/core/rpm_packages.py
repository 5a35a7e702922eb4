"""RPM packages as data: the `rpm -qa --qf` format the package diff asks for, the packages
parsed from rpm's answer, and rpm's rules for names, versions and architectures (what an image's
database says is checked before it is kept or shown). No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

# one package a line; the epoch only when the package has one
QUERY_FORMAT = "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\n"
_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]{0,254}")
_EVR = re.compile(r"(?:[0-9]{1,10}:)?[A-Za-z0-9._+~^]{1,128}-[A-Za-z0-9._+~^]{1,128}")
_ARCH = re.compile(r"[A-Za-z0-9_]{1,32}")


class NotAPackage(ValueError):
    """A line of rpm's answer that is not `name<TAB>evr<TAB>arch`: a garbage database."""


@dataclass(frozen=True, order=True)
class Package:
    name: str
    evr: str  # [epoch:]version-release
    arch: str

    def __str__(self) -> str:
        return f"{self.evr}.{self.arch}"


def parse_query(text: str) -> list[Package]:
    """The packages in the output of `rpm -qa --qf QUERY_FORMAT`; NotAPackage naming the first
    line that is not one."""
    found: list[Package] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(
            rule.fullmatch(part) for rule, part in zip((_NAME, _EVR, _ARCH), parts, strict=True)
        ):
            raise NotAPackage(f"rpm query line {number}: not a package: {line[:200]!r}")
        found.append(Package(*parts))
    return found


def is_name(text: str) -> bool:
    return bool(_NAME.fullmatch(text))


def is_version(text: str) -> bool:
    """Whether `text` is `[epoch:]version-release.arch`."""
    evr, _, arch = text.rpartition(".")
    return bool(_EVR.fullmatch(evr) and _ARCH.fullmatch(arch))
