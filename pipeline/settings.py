"""Runtime configuration from the environment (12-factor, prefix LAYERING_). No other module
reads os.environ: settings are built once at start-up and passed on. Reads the environment only."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import InputError

_GITHUB_URL = re.compile(
    r"^(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)"
    r"(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?$"
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAYERING_", frozen=True, extra="ignore")

    repo_url: str | None = None
    default_branch: str = "main"
    webhook_secret: SecretStr | None = None
    github_token: SecretStr | None = None
    github_app_id: int | None = None
    github_app_private_key: SecretStr | None = None
    github_app_installation_id: int | None = None
    github_api_url: str = "https://api.github.com"
    github_repository: str | None = None
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    registry_authfile: Path | None = None
    workdir: Path = Path(".layering")
    public_url: str = "http://127.0.0.1:8080"
    kubeconfig: Path | None = Field(
        default=None, validation_alias=AliasChoices("KUBECONFIG", "LAYERING_KUBECONFIG")
    )
    buildah_storage_driver: str = "vfs"
    buildah_isolation: str = "chroot"
    buildah_root: Path | None = None
    buildah_runroot: Path | None = None
    entitlement_dir: Path = Path("/etc/pki/entitlement")
    buildah_command: str = "buildah"
    # containers registries.conf for buildah and skopeo; skopeo 1.9 ignores the standard
    # CONTAINERS_REGISTRIES_CONF variable, so it is read here and passed as a flag
    registries_conf: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("LAYERING_REGISTRIES_CONF", "CONTAINERS_REGISTRIES_CONF"),
    )
    skopeo_command: str = "skopeo"
    build_log_max_lines: int = Field(default=20_000, ge=100)
    build_retention_seconds: int = Field(default=14 * 24 * 3600, ge=60)
    build_timeout_seconds: int = Field(default=3600, ge=60)
    delivery_ttl_seconds: int = Field(default=4 * 24 * 3600, ge=3 * 24 * 3600)
    max_body_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    registry_retries: int = Field(default=4, ge=0, le=20)
    retry_backoff_seconds: float = Field(default=2.0, ge=0)
    # promotion stage: one rollout-watch task run lasts at most rollout_watch_seconds, then it
    # re-enqueues itself until the pool is done or rollout_timeout_seconds have passed
    rollout_watch_seconds: float = Field(default=600, gt=0)
    rollout_timeout_seconds: float = Field(default=6 * 3600, gt=0)
    base_drift_interval_seconds: float = Field(default=900, ge=10)
    # commit statuses: retried by their task with exponential back-off (base * 2**n, at most
    # 10 minutes, at least the server's Retry-After) status_retries times (~4 hours), then
    # parked in Redis and resent by beat every status_resend_interval_seconds for up to
    # status_park_seconds
    status_retries: int = Field(default=30, ge=0)
    status_backoff_seconds: float = Field(default=1.0, ge=0)
    status_resend_interval_seconds: float = Field(default=60, ge=0.5)
    status_park_seconds: int = Field(default=7 * 24 * 3600, ge=60)

    @field_validator("default_branch")
    @classmethod
    def _branch_is_a_ref_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._/-]+", value) or ".." in value or value.startswith("-"):
            raise ValueError("must be a plain branch name such as 'main'")
        return value

    @cached_property
    def github_repo_name(self) -> str | None:
        """`owner/name` from LAYERING_GITHUB_REPOSITORY, else from a GitHub LAYERING_REPO_URL."""
        if self.github_repository:
            return self.github_repository
        if self.repo_url and (match := _GITHUB_URL.match(self.repo_url)):
            return match.group("repo")
        return None


def load_settings(**overrides: object) -> Settings:
    """Build Settings; a bad variable stops start-up with every problem named."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"LAYERING_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise InputError(f"bad configuration: {problems}") from None
