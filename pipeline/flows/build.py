"""One build, start to finish, shared by the Celery task "layering.build" and `layering build`:
load the image at a commit, check the planner's build key, reuse the registry's tag when it
holds this build (its labels carry the build key and base digest, and it is what an earlier
build recorded, if any), otherwise build under a per-key lock and push; then record the digest
for the build key (`built`), which is what promotion takes. Talks to the world only through the
ports handed in (core/ports.py), so the task, the CLI and tests wire different adapters.

    run_build(settings, request, *, build_id, records, sources, builder, registry, locks,
              secrets, built=None, on_line=None, final_attempt=True, lease=None, stopped=(),
              timeout_seconds=None, clock=time.time, defer=None, on_start=None,
              inspector=None, on_changes=None, content=None)
      -> builds.BuildRecord

- `request`: builds.BuildRequest. `request.build_key`, when given, is what the planner
  computed; a mismatch (a stale plan) is logged and the key of the loaded checkout wins.
- `secrets`: values masked in every stored line and error (adapters/credentials.py).
- `built`: where the digest each build pushed or reused is recorded (None: nowhere, e.g. a
  build on a laptop; the pipeline's own build of the key records it when it reuses the tag).
- `lease`: the worker's lease of this build (adapters/leases.py). Lost means the build was
  delivered again to another worker: this run stops (the builder's `cancelled` says so too) and
  returns the record as the new run left it, never saving over it.
- `stopped`: exception types meaning the task's time limit stopped the build (Celery's
  SoftTimeLimitExceeded; the builder has killed buildah's process group by then): the record
  fails "build stopped: exceeded LAYERING_BUILD_TIMEOUT_SECONDS (`timeout_seconds`)".
- `defer`: takes the clean-up of a pushed build (removing its local image, `builder.discard`,
  under the build key's lock) once the record is saved as succeeded; the worker runs it on a
  thread, so the removal (seconds for a large image on vfs) leaves the task's slot to the next
  build. None: removed at once, before returning.
- `inspector`: reads what a succeeded build's image changes against its base
  (flows/build_changes.py), saved on the record as `changes` before the image is removed (in
  the deferred clean-up when deferred); `on_changes` then hears the record. None: not read.
- `content`: reads the built image's layers for the content lint (flows/content_check.py)
  between build and push; its findings are saved on the record (`content_findings`), and an
  error finding fails the build naming it: the local image is removed, nothing pushed. None:
  no content lint (LAYERING_CONTENT_LINT=false).
- `on_start`: hears the record once it is saved as running, right before buildah starts (the
  worker reports the build's check run in progress).
- Nothing is pushed once the record is finished (cancelled, failed by a time limit) or the
  lease is lost: the push is refused, checked right before buildah push starts.
- Returns the final record: succeeded, skipped (tag already in the registry with this build's
  labels, digest reused; buildah not run), failed (PermanentError / BuildFailed: error,
  failing step and line) or cancelled (before buildah started, or the builder raised
  Cancelled: it killed buildah).
  A record already finished is returned unchanged (safe to run twice).
- TemporaryError (registry 5xx, refused, reset, timeouts) is re-raised with the record back in
  `queued` unless `final_attempt`, in which case the record fails naming the registry and the
  last error. The caller owns retries and their back-off (retry.backoff, policy "build").
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from pipeline.core import (
    buildah_output,
    builds,
    log_caps,
    ports,
    ports_content,
    ports_image_changes,
    redaction,
)
from pipeline.core.errors import BuildFailed, Cancelled, PermanentError, TemporaryError
from pipeline.core.settings import Settings
from pipeline.flows import build_changes, content_check


def run_build(
    settings: Settings,
    request: builds.BuildRequest,
    *,
    build_id: str,
    records: ports.BuildRecords,
    sources: ports.SourceLoader,
    builder: ports.ImageBuilder,
    registry: ports.RegistryReader,
    locks: ports.KeyLocks,
    secrets: Sequence[str],
    built: ports.BuiltImages | None = None,
    on_line: ports.LineSink | None = None,
    final_attempt: bool = True,
    lease: ports.HeldLease | None = None,
    stopped: tuple[type[BaseException], ...] = (),
    timeout_seconds: float | None = None,
    clock: Callable[[], float] = time.time,
    defer: Callable[[Callable[[], None]], None] | None = None,
    on_start: Callable[[builds.BuildRecord], None] | None = None,
    inspector: ports_image_changes.ImageInspector | None = None,
    on_changes: Callable[[builds.BuildRecord], None] | None = None,
    content: ports_content.ContentReader | None = None,
) -> builds.BuildRecord:
    def emit(line: str) -> None:
        # a RUN step chooses its lines: shorten before masking (the store cuts the rest)
        line = redaction.scrub(
            log_caps.before_scrub(line, settings.build_log_line_max_bytes), secrets
        )
        records.append_log(build_id, line)
        if on_line is not None:
            on_line(line)

    def save(record: builds.BuildRecord) -> builds.BuildRecord:
        record = dataclasses.replace(record, error=redaction.scrub(record.error, secrets))
        records.save(record)
        return record

    def done(record: builds.BuildRecord, spec: builds.BuildSpec) -> builds.BuildRecord:
        """Record the digest for the build key before the record says it is done."""
        if built is not None and request.push:
            built.record_built(
                builds.BuiltImage(spec.build_key, spec.repository, record.digest, build_id, clock())
            )
        return save(record)

    def reusable(spec: builds.BuildSpec) -> str | None:
        """The digest under the tag when it is this build's; else None (build it)."""
        if not request.push:
            return None
        found = registry.image_of(spec.target)
        if found is None:
            return None
        problem = builds.reuse_problem(spec, found)
        recorded = built.built(spec.build_key, spec.repository) if built is not None else None
        if not problem and recorded is not None and recorded.digest != found.digest:
            problem = f"the build of this key recorded {recorded.digest}, not {found.digest}"
        if problem:
            emit(f"{spec.target} exists with {found.digest}, but {problem}: building it again")
            return None
        emit(f"{spec.target} exists with {found.digest}: skipped, buildah not run")
        return found.digest

    def may_push() -> None:
        """Refuse to push for a record that is finished or a lease that was lost."""
        if lease is not None and not lease.held():
            raise Cancelled("lease lost: the build was delivered again")
        current = records.get(build_id)
        if current is not None and current.state.terminal:
            raise Cancelled(f"the record says {current.state.value}: not pushing")

    record = records.get(build_id) or builds.queued(
        build_id,
        image=request.image,
        cluster=request.cluster,
        now=clock(),
        commit_sha=request.commit_sha or "",
        build_key=request.build_key or "",
    )
    if record.state.terminal:
        return record
    record = save(builds.begin_attempt(record, now=clock()))
    emit(
        f"build {build_id}: image {request.image} for cluster {request.cluster}, "
        f"attempt {record.attempts}"
    )
    spec: builds.BuildSpec | None = None
    try:
        with sources.checkout(
            request.source, image=request.image, commit_sha=request.commit_sha
        ) as checkout:
            spec = _spec(settings, request, checkout, builder=builder)
            record = save(
                dataclasses.replace(
                    record,
                    build_key=spec.build_key,
                    target=spec.target,
                    commit_sha=request.commit_sha or record.commit_sha,
                )
            )
            if request.build_key and request.build_key != spec.build_key:
                emit(
                    f"note: planned key {request.build_key} differs; building key {spec.build_key}"
                )
            emit(f"build key {spec.build_key} -> {spec.target} on {spec.base}")
            if digest := reusable(spec):
                return done(builds.skip(record, digest=digest, now=clock()), spec)

            waited: list[bool] = []

            def waiting() -> None:
                waited.append(True)
                emit(f"another build of key {spec.build_key} is running; waiting for it")

            with locks.hold(spec.build_key, on_wait=waiting):
                # the holder we waited for has probably pushed the tag: share its result
                if waited and (digest := reusable(spec)):
                    return done(builds.skip(record, digest=digest, now=clock()), spec)
                current = records.get(build_id)
                if current is not None and current.state is builds.BuildState.CANCELLED:
                    emit("cancelled before buildah started")
                    return current
                record = save(builds.start(record, now=clock()))
                if on_start is not None:
                    on_start(record)
                if content is not None:
                    content.prepare(spec.base)  # the base's side is read while buildah builds
                image_id = builder.build(spec, on_line=emit)
                if content is not None:
                    report = content_check.gate(
                        spec,
                        image_id,
                        reader=content,
                        # kept without --push: the person building can look inside it
                        discard=_discarding(builder, spec, push=request.push, on_line=emit),
                        on_line=emit,
                    )
                    findings = content_check.documents(report)
                    # saved with the outcome: a record cancelled meanwhile stays cancelled
                    record = dataclasses.replace(record, content_findings=findings)
                    if report.errors:
                        may_push()  # a cancelled record or a lost lease stops here instead
                        error = content_check.failure(spec.image, report)
                        emit(f"failed: {error}")
                        return save(builds.fail(record, error=error, now=clock()))
                if request.push:
                    may_push()
                digest = builder.push(spec, on_line=emit) if request.push else image_id
                emit(f"{'pushed ' + spec.target if request.push else 'built'}: {digest}")
                record = done(builds.succeed(record, digest=digest, now=clock()), spec)
                built_spec = spec

                def analyse() -> builds.BuildRecord | None:
                    if inspector is None:
                        return None
                    return build_changes.analyse(
                        built_spec,
                        build_id=build_id,
                        records=records,
                        inspector=inspector,
                        secrets=secrets,
                        on_line=emit,
                        on_changes=on_changes,
                    )

                if request.push and defer is not None:
                    defer(lambda: _discard_held(locks, builder, built_spec, analyse, on_line=emit))
                    return record
                record = analyse() or record
                if request.push:
                    builder.discard(spec, on_line=emit)
                return record
    except Cancelled as exc:
        # the builder killed buildah (build or push) because the build was cancelled, or its
        # lease was lost, or the push was refused
        emit(f"stopped: {exc}; nothing pushed")
        current = records.get(build_id)
        if lease is not None and not lease.held():
            return current or record  # the run that took the build over owns the record
        if current is not None and current.state.terminal:
            return current
        return save(builds.cancel(record, now=clock(), reason=str(exc)))
    except BuildFailed as exc:
        step = buildah_output.parse_step(exc.step)
        line = buildah_output.step_line(spec.containerfile, step) if spec and step else None
        where = f"images/{request.image}/Containerfile" + (f":{line}" if line else "")
        message = f"{where}: {exc}"
        if exc.log_tail:
            message += f"\n--- output tail ---\n{exc.log_tail}"
        emit(f"failed: {where}: {exc}")
        return save(builds.fail(record, error=message, step=exc.step, line=line, now=clock()))
    except PermanentError as exc:
        emit(f"failed: {exc}")
        return save(builds.fail(record, error=str(exc), now=clock()))
    except TemporaryError as exc:
        if final_attempt:
            message = f"gave up after {record.attempts} attempt(s): {exc}"
            emit(f"failed: {message}")
            return save(builds.fail(record, error=message, now=clock()))
        emit(f"attempt {record.attempts} failed, will retry: {exc}")
        save(builds.requeue(record, error=str(exc), now=clock()))
        raise
    except stopped:
        limit = f"{timeout_seconds:.0f}s" if timeout_seconds else "its time limit"
        message = (
            f"build stopped: exceeded LAYERING_BUILD_TIMEOUT_SECONDS ({limit}); buildah's "
            "process group was killed and nothing was pushed; make the build faster or raise "
            "LAYERING_BUILD_TIMEOUT_SECONDS"
        )
        emit(message)
        return save(builds.fail(record, error=message, step="", now=clock()))
    except Exception as exc:
        # a bug, not the build's fault: the record must not stay queued forever
        emit(f"internal error: {type(exc).__name__}: {exc}")
        save(builds.fail(record, error=f"internal error: {type(exc).__name__}: {exc}", now=clock()))
        raise


def _discard_held(
    locks: ports.KeyLocks,
    builder: ports.ImageBuilder,
    spec: builds.BuildSpec,
    analyse: Callable[[], object],
    *,
    on_line: ports.LineSink,
) -> None:
    """A deferred clean-up holds the key's lock, as the build did: a build of the same key in
    the same storage never has the tag it just built removed by an older build's clean-up.
    It reads the image's changes first, while the image is still there."""
    with locks.hold(spec.build_key, on_wait=lambda: None):
        try:
            analyse()
        finally:
            builder.discard(spec, on_line=on_line)


def _discarding(
    builder: ports.ImageBuilder, spec: builds.BuildSpec, *, push: bool, on_line: ports.LineSink
) -> Callable[[], None]:
    def discard() -> None:
        if push:
            builder.discard(spec, on_line=on_line)

    return discard


def _spec(
    settings: Settings,
    request: builds.BuildRequest,
    checkout: builds.Checkout,
    *,
    builder: ports.ImageBuilder,
) -> builds.BuildSpec:
    repository = checkout.repository
    image = repository.images.get(request.image)
    cluster = repository.clusters.get(request.cluster)
    image_problems = repository.problems_for(f"images/{request.image}/")
    cluster_problems = repository.problems_for(f"clusters/{request.cluster}/")
    if image_problems or cluster_problems:
        raise PermanentError("; ".join(str(p) for p in (*image_problems, *cluster_problems)))
    if image is None:
        raise PermanentError(f"images/{request.image}: no such image in the repository")
    if cluster is None:
        raise PermanentError(f"clusters/{request.cluster}: no such cluster in the repository")
    if image.settings.entitlement and not builder.has_entitlement():
        raise PermanentError(
            f"images/{image.name}/image.yaml sets entitlement: true, but "
            f"{settings.entitlement_dir} does not exist on this worker; mount the RHEL "
            "entitlement certificates there (LAYERING_ENTITLEMENT_DIR)"
        )
    return builds.build_spec(
        image=image,
        cluster=cluster,
        context=checkout.context,
        commit_sha=request.revision or request.commit_sha or "",
        source_url=redaction.public_url(request.source_url or settings.repo_url or ""),
    )
