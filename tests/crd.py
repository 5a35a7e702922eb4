"""Validate objects against the CRD schemas copied into tests/fixtures (see SOURCES.md)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# the custom kinds deploy/ ships, and the CRD each is validated against
BY_KIND = {
    "Route": "routes.crd.yaml",
    "SecurityContextConstraints": "securitycontextconstraints.crd.yaml",
    "ScaledObject": "keda.sh_scaledobjects.crd.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.crd.yaml",
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}


@cache
def _validator(crd_file: str, version_name: str = "v1") -> jsonschema.protocols.Validator:
    crd = yaml.safe_load((FIXTURES / crd_file).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == version_name]
    schema = _without_nulls(version["schema"]["openAPIV3Schema"])
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft7Validator
    )
    return validator_class(schema)


def _without_nulls(schema: Any) -> Any:
    """The schema as the API server reads it, in jsonschema's terms: keys set to null are absent
    (openshift/api's generated Route CRD has `anyOf: null`), and OpenAPI's `nullable: true`
    lets the value be null (the SCC's `priority: null`)."""
    if isinstance(schema, dict):
        converted = {
            key: _without_nulls(value) for key, value in schema.items() if value is not None
        }
        if converted.pop("nullable", False) and isinstance(converted.get("type"), str):
            converted["type"] = [converted["type"], "null"]
        return converted
    if isinstance(schema, list):
        return [_without_nulls(item) for item in schema]
    return schema


def machineconfig_errors(obj: dict[str, Any]) -> list[str]:
    return [error.message for error in _validator("machineconfigs.crd.yaml").iter_errors(obj)]


def machineconfigpool_errors(obj: dict[str, Any]) -> list[str]:
    return [error.message for error in _validator("machineconfigpools.crd.yaml").iter_errors(obj)]


def errors(crd_file: str, obj: dict[str, Any]) -> list[str]:
    """What the CRD's openAPIV3Schema (of the object's apiVersion) says is wrong with `obj`,
    each with the path to the field."""
    version_name = str(obj["apiVersion"]).rsplit("/", 1)[-1]
    return [
        f"{'.'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in _validator(crd_file, version_name).iter_errors(obj)
    ]
