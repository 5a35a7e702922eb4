"""An import-linter contract type that lists what a package may import, rather than what it may
not: `allowed` names internal packages and third-party distributions (top-level import names);
the standard library is allowed except the modules named in `forbidden_stdlib` (the ones that
do I/O). Registered in pyproject.toml `[tool.importlinter] contract_types`."""

from __future__ import annotations

import sys

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def _within(module: str, prefixes: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


class AllowlistContract(Contract):
    type_name = "allowlist"

    source_modules = fields.ListField(subfield=fields.StringField())
    allowed = fields.ListField(subfield=fields.StringField())
    forbidden_stdlib = fields.ListField(subfield=fields.StringField(), required=False, default=[])

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        allowed = {str(name) for name in self.allowed}
        sources = {str(name) for name in self.source_modules}
        forbidden_stdlib = {str(name) for name in self.forbidden_stdlib}
        stdlib = set(sys.stdlib_module_names) | {"__future__"}
        roots = {name.split(".")[0] for name in sources}
        violations: list[dict[str, object]] = []
        for source in sorted(sources):
            for importer in sorted({source, *graph.find_descendants(source)}):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    top = imported.split(".")[0]
                    if _within(imported, sources | allowed):
                        continue
                    if (
                        top in stdlib
                        and top not in roots
                        and not _within(imported, forbidden_stdlib)
                    ):
                        continue
                    details = graph.get_import_details(importer=importer, imported=imported)
                    violations.append(
                        {
                            "importer": importer,
                            "imported": imported,
                            "lines": sorted(d["line_number"] for d in details),
                        }
                    )
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for violation in check.metadata["violations"]:
            lines = ", ".join(f"l.{n}" for n in violation["lines"])
            output.print_error(
                f"{violation['importer']} is not allowed to import {violation['imported']}"
                f" ({lines})",
                bold=False,
            )
        output.new_line()
