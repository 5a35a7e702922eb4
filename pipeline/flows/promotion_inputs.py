"""What the promote and gate flows load before the core decides a plan: for each pool's build key
the digest its build recorded, checked against the registry (still served by digest, and the tag
not moved elsewhere) and, with a signing key set, signed by it (issue 14: a digest that is not
is refused by the gate and by promotion alike); and the verifications of the upstream clusters,
those of an upstream with kube access confirmed against its pools as they are now. Does I/O
only through the ports it is given."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.core import (
    commit_status,
    ports,
    ports_signing,
    promotion,
    repo,
    rollout,
    upstream_proof,
    verification,
)
from pipeline.core.errors import PermanentError


@dataclass(frozen=True)
class PlanInputs:
    lookups: Mapping[tuple[str, str], promotion.DigestLookup]  # (image, cluster) ->
    verifications: Mapping[tuple[str, str], verification.Verification]  # (cluster, digest) ->
    public_key: bytes | None = None  # the signing key the ClusterImagePolicies carry


@dataclass(frozen=True)
class Signing:
    """The public key promoted digests must be signed by (read from LAYERING_SIGNING_PUBLIC_KEY
    by the entry point, never from the branch being promoted) and the check of a signature."""

    public_key: bytes
    check: ports_signing.SignatureCheck


@dataclass(frozen=True)
class Sources:
    """The ports the promotion inputs come through."""

    registry: ports.RegistryReader
    store: ports.PromotionStore
    built: ports.BuiltImages
    clusters: ports.Clusters
    signing: Signing | None = None  # None: images are not signed, no policy is written


def lookup_digests(
    targets: Iterable[promotion.Target],
    registry: ports.RegistryReader,
    built: ports.BuiltImages,
) -> dict[tuple[str, str], promotion.DigestLookup]:
    """The digest each target's build recorded, checked against the registry once per tag."""
    found: dict[tuple[str, str], promotion.DigestLookup] = {}
    seen: dict[str, promotion.DigestLookup] = {}
    for target in targets:
        if target.tag_reference not in seen:
            seen[target.tag_reference] = _lookup(target, registry, built)
        found[(target.image, target.cluster)] = seen[target.tag_reference]
    return found


def _lookup(
    target: promotion.Target, registry: ports.RegistryReader, built: ports.BuiltImages
) -> promotion.DigestLookup:
    recorded = built.built(target.build_key, target.image_repository)
    if recorded is None:
        return promotion.DigestLookup(target.build_key)
    named = f"sha256:{commit_status.short_digest(recorded.digest)}"
    if registry.digest_of(f"{target.image_repository}@{recorded.digest}") is None:
        return promotion.DigestLookup(
            target.build_key,
            refused=f"the registry no longer serves {named}, which the build recorded; rebuild",
        )
    tagged = registry.digest_of(target.tag_reference)
    if tagged is not None and tagged != recorded.digest:
        return promotion.DigestLookup(
            target.build_key,
            refused=(
                f"tag moved: it names sha256:{commit_status.short_digest(tagged)}, the build "
                f"recorded {named}; someone pushed over it: check, then rebuild"
            ),
        )
    return promotion.DigestLookup(target.build_key, recorded.digest)


def check_signatures(
    targets: Iterable[promotion.Target],
    lookups: Mapping[tuple[str, str], promotion.DigestLookup],
    signing: Signing,
) -> dict[tuple[str, str], promotion.DigestLookup]:
    """`lookups`, each digest found checked once for a signature by the signing key: one
    that is not signed by it carries why (promotion.plan refuses it, naming it)."""
    checked = dict(lookups)
    seen: dict[str, str | None] = {}
    for target in targets:
        lookup = lookups.get((target.image, target.cluster))
        if lookup is None or lookup.digest is None:
            continue
        reference = f"{target.image_repository}@{lookup.digest}"
        if reference not in seen:
            seen[reference] = signing.check.problem(reference, public_key=signing.public_key)
        problem = seen[reference]
        if problem is not None:
            # the adapter names the reference; the refusal names the digest shorter
            why = problem.replace(reference, "").strip(" :;,-") or problem
            checked[(target.image, target.cluster)] = dataclasses.replace(
                lookup,
                unsigned=(
                    f"sha256:{commit_status.short_digest(lookup.digest)} is not signed by the "
                    f"signing key: {why}"
                ),
            )
    return checked


def confirm_upstreams(
    repository: repo.Repository,
    environment: str,
    stored: Mapping[tuple[str, str], verification.Verification],
    clusters: ports.Clusters,
) -> dict[tuple[str, str], verification.Verification]:
    """`stored`, with the verifications of every upstream that has kube access checked
    against its pools read now (only when one of them is healthy: nothing to confirm else)."""
    confirmed = dict(stored)
    for name, pools in upstream_proof.pools_to_read(repository, environment).items():
        if not any(key[0] == name and proven.healthy for key, proven in stored.items()):
            continue
        context = repository.clusters[name].kube_context
        assert context is not None
        try:
            with clusters.connect(context) as reader:
                running: list[rollout.Running] = [
                    found for pool in pools if (found := reader.running(pool)) is not None
                ]
        except PermanentError as exc:
            confirmed = upstream_proof.unreadable(confirmed, name, str(exc))
            continue
        confirmed = upstream_proof.confirm_all(confirmed, {name: running})
    return confirmed


def load(repository: repo.Repository, environment: str, sources: Sources) -> PlanInputs:
    """Everything `promotion.plan` and `gate.decide` need besides the repository (the rules
    in force: the branch head for a promotion, promotion_policy.InForce for a gate)."""
    stored = sources.store.verifications(promotion.upstreams(repository, environment))
    targets = promotion.targets(repository, environment)
    lookups = lookup_digests(targets, sources.registry, sources.built)
    signing = sources.signing
    if signing is not None:
        lookups = check_signatures(targets, lookups, signing)
    return PlanInputs(
        lookups=lookups,
        verifications=confirm_upstreams(repository, environment, stored, sources.clusters),
        public_key=signing.public_key if signing is not None else None,
    )
