"""The schema of the watched repository's YAML files: `images/<image>/image.yaml`
(ImageSettings: build arguments, entitlement, lint waivers) and `clusters/<cluster>/cluster.yaml`
(ClusterSettings), as strict pydantic models whose errors name the field and say what to write,
plus the duration syntax of `soak`. repo.py turns validated files into the repository model.
No I/O.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from pipeline.core import names

# matched whole; each optional part ends in its own letter, so a failed match gives up after
# one pass per part (linear in the text)
_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Waiver(_Strict):
    # every rule but LAY006 (a broken configuration cannot be waived in that configuration):
    # repo.RULE_IDS and content_rules.CONTENT_RULE_IDS (tests/unit/test_content_rules.py)
    rule: Literal[
        "LAY001", "LAY002", "LAY003", "LAY004", "LAY005", "LAY007", "LAY008", "LAY009", "LAY010",
        "LAY011", "LAY101", "LAY102", "LAY103", "LAY104", "LAY105", "LAY106", "LAY107", "LAY108",
        "LAY109", "LAY110", "LAY111", "LAY112", "LAY113",
    ]  # fmt: skip
    reason: str = Field(min_length=1)

    @field_validator("reason")
    @classmethod
    def _reason_says_something(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a waiver needs a reason: say why this rule does not apply")
        return value.strip()


class ImageSettings(_Strict):
    build_args: dict[str, str] = Field(default_factory=dict, alias="buildArgs")
    entitlement: StrictBool = False
    allow: tuple[Waiver, ...] = ()

    @field_validator("build_args")
    @classmethod
    def _arg_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"build argument name {key!r} must match [A-Za-z_][A-Za-z0-9_]*")
        return value


DEFAULT_IMAGE_SETTINGS = ImageSettings()


class KubeAccess(_Strict):
    context: str = Field(min_length=1)


class ClusterSettings(_Strict):
    environment: str
    base_image: str = Field(alias="baseImage")
    registry: str
    pools: dict[str, str] = Field(default_factory=dict)
    promotes_from: str | None = Field(default=None, alias="promotesFrom")
    soak: str | int = "0s"
    kube: KubeAccess | None = None
    # pull-request mode: merge the promotion pull request through the API once its gate is
    # green; None: true for a first environment (no promotesFrom), false for the rest
    auto_merge: StrictBool | None = Field(default=None, alias="autoMerge")

    @field_validator("environment")
    @classmethod
    def _environment_label(cls, value: str) -> str:
        if not names.is_dns_label(value):
            raise ValueError("must be a DNS label (lower-case letters, digits, '-'), e.g. nonprod")
        return value

    @field_validator("base_image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        try:
            ref = names.parse_image_ref(value)
        except ValueError as exc:
            raise ValueError(f"{exc}; expected <repository>@sha256:<64 hex>") from None
        if ref.digest is None or ref.tag is not None:
            raise ValueError("must be pinned by digest (<repository>@sha256:<64 hex>, no tag)")
        return value

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        try:
            ref = names.parse_image_ref(value)
        except ValueError as exc:
            raise ValueError(f"{exc}; expected host[:port]/path such as quay.io/team") from None
        if ref.tag or ref.digest:
            raise ValueError("must be a repository prefix without tag or digest")
        return value

    @field_validator("pools", mode="before")
    @classmethod
    def _pools(cls, value: object) -> object:
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of pool name to image name, e.g. worker: firewalld")
        for pool, image in value.items():
            if not isinstance(pool, str) or not names.is_dns_label(pool):
                raise ValueError(f"pool name {pool!r} must be a DNS label")
            if not isinstance(image, str) or not names.is_dns_label(image):
                raise ValueError(
                    f"pool {pool!r} must name exactly one image (a DNS label); "
                    "a pool boots one OS image"
                )
        return value

    @field_validator("soak", mode="before")
    @classmethod
    def _soak(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError("must be a duration such as 0s, 30m, 24h, 2d or a number of seconds")
        duration_seconds(value)
        return value


def duration_seconds(value: str | int) -> int:
    """`90`, `90s`, `30m`, `24h`, `2d`, `1h30m` -> seconds."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    match = _DURATION.fullmatch(value.strip())
    if not value.strip() or match is None:
        raise ValueError(f"{value!r} is not a duration; use e.g. 0s, 30m, 24h, 2d, 1h30m")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
