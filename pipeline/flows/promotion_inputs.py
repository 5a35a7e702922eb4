"""What the promote and gate flows load before the core decides a plan: the registry's digest
for each pool's build-key tag, and the verifications of the upstream clusters. Does I/O only
through the ports it is given."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.core import ports, promotion, repo, verification


@dataclass(frozen=True)
class PlanInputs:
    lookups: Mapping[tuple[str, str], promotion.DigestLookup]  # (image, cluster) ->
    verifications: Mapping[tuple[str, str], verification.Verification]  # (cluster, digest) ->


def lookup_digests(
    targets: Iterable[promotion.Target], registry: ports.RegistryReader
) -> dict[tuple[str, str], promotion.DigestLookup]:
    """The registry's digest for each target's build-key tag, asked once per tag."""
    found: dict[tuple[str, str], promotion.DigestLookup] = {}
    seen: dict[str, str | None] = {}
    for target in targets:
        if target.tag_reference not in seen:
            seen[target.tag_reference] = registry.digest_of(target.tag_reference)
        found[(target.image, target.cluster)] = promotion.DigestLookup(
            target.build_key, seen[target.tag_reference]
        )
    return found


def load(
    repository: repo.Repository,
    environment: str,
    *,
    registry: ports.RegistryReader,
    store: ports.PromotionStore,
) -> PlanInputs:
    """Everything `promotion.plan` and `gate.decide` need besides the repository."""
    return PlanInputs(
        lookups=lookup_digests(promotion.targets(repository, environment), registry),
        verifications=store.verifications(promotion.upstreams(repository, environment)),
    )
