"""RPM packages as data: the `rpm -qa --qf` format the package diff asks for, the packages
parsed from rpm's answer, rpm's rules for names, versions and architectures (what an image's
database says is checked before it is kept or shown), and rpm's order of versions
(`compare_versions`, rpmvercmp). No I/O."""

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


def compare_versions(left: str, right: str) -> int:
    """rpm's order of two `[epoch:]version-release` (-1, 0, 1)."""
    left_epoch, _, left_rest = left.rpartition(":")
    right_epoch, _, right_rest = right.rpartition(":")
    if left_epoch.zfill(20) != right_epoch.zfill(20):  # epochs are digits (rpm_packages checks)
        return 1 if left_epoch.zfill(20) > right_epoch.zfill(20) else -1
    left_version, _, left_release = left_rest.partition("-")
    right_version, _, right_release = right_rest.partition("-")
    return _vercmp(left_version, right_version) or _vercmp(left_release, right_release)


_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM = _DIGITS | _LETTERS


def _vercmp(one: str, two: str) -> int:
    """rpmvercmp (rpm's lib/rpmvercmp.c): segments of digits or letters, `~` sorts first,
    `^` after the end of the other; one pass over both strings."""
    if one == two:
        return 0
    i = j = 0
    while i < len(one) or j < len(two):
        while i < len(one) and one[i] not in _ALNUM and one[i] not in "~^":
            i += 1
        while j < len(two) and two[j] not in _ALNUM and two[j] not in "~^":
            j += 1
        a, b = one[i : i + 1], two[j : j + 1]
        if "~" in (a, b):
            if a != "~" or b != "~":
                return 1 if b == "~" else -1
            i, j = i + 1, j + 1
            continue
        if "^" in (a, b):
            if not a or not b:
                return -1 if not a else 1
            if a != "^" or b != "^":
                return 1 if a != "^" else -1
            i, j = i + 1, j + 1
            continue
        if not a or not b:
            break
        kind = _DIGITS if a in _DIGITS else _LETTERS
        start_i, start_j = i, j
        while i < len(one) and one[i] in kind:
            i += 1
        while j < len(two) and two[j] in kind:
            j += 1
        left, right = one[start_i:i], two[start_j:j]
        if not right:
            return 1 if kind is _DIGITS else -1
        if kind is _DIGITS:
            left, right = left.lstrip("0"), right.lstrip("0")
            if len(left) != len(right):
                return 1 if len(left) > len(right) else -1
        if left != right:
            return 1 if left > right else -1
    if i >= len(one) and j >= len(two):
        return 0
    return -1 if i >= len(one) else 1
