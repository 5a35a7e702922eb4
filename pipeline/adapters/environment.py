"""Settings from the environment (12-factor, prefix LAYERING_). No other module reads
os.environ: settings are built once at start-up and passed on. Reads the environment only."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.core.errors import InputError
from pipeline.core.settings import Settings


class _EnvironmentSettings(BaseSettings, Settings):
    model_config = SettingsConfigDict(
        env_prefix="LAYERING_", frozen=True, extra="ignore", populate_by_name=True
    )


def load_settings(**overrides: object) -> Settings:
    """Build Settings; a bad variable stops start-up with every problem named."""
    try:
        return _EnvironmentSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"LAYERING_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise InputError(f"bad configuration: {problems}") from None
