"""The port the promote and gate flows check image signatures through (issue 14): whether a
pushed digest carries a sigstore signature by the service's public key
(adapters/signatures.py). No I/O."""

from __future__ import annotations

from typing import Protocol


class SignatureCheck(Protocol):
    def problem(self, reference: str, *, public_key: bytes) -> str | None: ...
