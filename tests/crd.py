"""Validate objects against the CRD schemas copied into tests/fixtures (see SOURCES.md)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@cache
def _validator(crd_file: str) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load((FIXTURES / crd_file).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = version["schema"]["openAPIV3Schema"]
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft7Validator
    )
    return validator_class(schema)


def machineconfig_errors(obj: dict[str, Any]) -> list[str]:
    return [error.message for error in _validator("machineconfigs.crd.yaml").iter_errors(obj)]


def machineconfigpool_errors(obj: dict[str, Any]) -> list[str]:
    return [error.message for error in _validator("machineconfigpools.crd.yaml").iter_errors(obj)]
