"""One lint finding: the rule (LAY001..LAY011, LAY101..LAY113), its severity, the file and line
it is about (for a content rule the path inside the image, no line), and a message that says how
to fix it. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.id} {self.severity}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "path": self.path,
            "line": self.line,
            "message": self.message,
        }


class BySeverity:
    """The errors and warnings among `findings` (lint.Report, content_rules.ContentReport)."""

    findings: tuple[Finding, ...]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]
