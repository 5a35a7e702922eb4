"""`layering up`: the whole pipeline on this machine, each part a real child process on the
loopback interface: a private Redis (append-only persistence, a password from the workdir), a
docker-registry, the receiver, a Celery worker and Celery beat, started in that order, each
awaited until it answers. Secrets reach the services in their environment, never on an argv
(keys.py says why). Builds use oci isolation where the probe shows it works here, else chroot,
said at start (LAYERING_BUILDAH_ISOLATION, when set, decides instead); buildah storage is
overlay where the probe of the workdir's storage root shows it works, else vfs, said at start
too (LAYERING_BUILDAH_STORAGE_DRIVER, when set, decides instead). With no
LAYERING_REPO_URL it also makes the local GitOps sandbox (sandbox.py) and installs the
post-receive hook into it. Pushes are signed with a sigstore key made in the workdir on first
start (LAYERING_SIGNING_KEY, when set, decides instead; `--unsigned` turns signing off). `run`
starts everything and stops it on Ctrl-C, by process group (supervisor.py); the data stays in
the workdir (workdir.py) for the next run. Does file, process, Git and network I/O.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pipeline.adapters import hook, signing_keys, storage_probe
from pipeline.adapters import isolation as isolation_probe
from pipeline.core import isolation, storage_driver, tasks
from pipeline.core.errors import InputError, PipelineError
from pipeline.local import keys, sandbox, supervisor, workdir

QUEUES = ",".join(tasks.QUEUES)


def service_environment(
    base: Mapping[str, str],
    *,
    layout: workdir.Layout,
    ports: Mapping[str, int],
    options: workdir.Options,
    secret: str,
    redis_url: str,
    verification_key: str,
    build_isolation: str,
    storage: str = "vfs",
    signing: signing_keys.KeyPair | None = None,
) -> dict[str, str]:
    """The environment of the receiver, worker and beat (the only place their secrets are)."""
    env = dict(base)
    env.update(
        {
            "LAYERING_REDIS_URL": redis_url,
            "LAYERING_VERIFICATION_KEY": verification_key,
            "LAYERING_BUILDAH_ISOLATION": build_isolation,
            "LAYERING_WORKDIR": str(layout.service),
            "LAYERING_PUBLIC_URL": f"http://127.0.0.1:{ports['receiver']}",
            "LAYERING_WEBHOOK_SECRET": secret,
            "CONTAINERS_REGISTRIES_CONF": str(layout.registries_conf),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if signing is not None:
        # paths only: the worker reads the passphrase from its file
        env["LAYERING_SIGNING_KEY"] = str(signing.private_key)
        env["LAYERING_SIGNING_PASSPHRASE_FILE"] = str(signing.passphrase_file)
        env["LAYERING_SIGNING_PUBLIC_KEY"] = str(signing.public_key)
    if options.buildah_storage:
        env["LAYERING_BUILDAH_ROOT"] = str(layout.buildah / "root")
        env["LAYERING_BUILDAH_RUNROOT"] = str(layout.buildah / "run")
        env["LAYERING_BUILDAH_STORAGE_DRIVER"] = storage
    if options.repo_url is None:
        env["LAYERING_REPO_URL"] = layout.repository.as_uri()
        env["LAYERING_DEFAULT_BRANCH"] = "main"
        env["LAYERING_ENTITLEMENT_DIR"] = str(layout.entitlement)
        env.pop("LAYERING_GITHUB_REPOSITORY", None)
    return env


def _require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise InputError(f"missing tools: {', '.join(missing)} (`make up` installs them)")


def start_redis(
    processes: supervisor.Supervisor, *, port: int, env: Mapping[str, str], say: workdir.Say
) -> str:
    """redis-server with the workdir's password (made on first use), given to it in a 0600
    configuration file; returns the URL with the password, for the services' environment."""
    layout = processes.layout
    layout.redis.mkdir(parents=True, exist_ok=True)
    password = keys.secret(layout.redis_password_file)
    keys.write_private(
        layout.redis_config, keys.redis_config(port=port, data=layout.redis, password=password)
    )
    started = time.monotonic()
    redis = processes.start(
        "redis", [shutil.which("redis-server") or "redis-server", str(layout.redis_config)], env
    )
    supervisor.wait_until(supervisor.listening(port), child=redis, what="redis", timeout=20)
    say(
        f"redis on redis://127.0.0.1:{port}/0 (password in {layout.redis_password_file}, "
        f"append-only file in {layout.redis}) {workdir.since(started)}"
    )
    return keys.redis_url(port=port, password=password)


def choose_storage(options: workdir.Options, layout: workdir.Layout, say: workdir.Say) -> str:
    """The workers' storage driver on the workdir's storage root: the one asked for, else
    overlay when the probe shows it works here, else vfs (saying what the host lacks); an
    explicit overlay that does not work stops `up` with the reason and the fix."""
    setting = options.storage_driver or "auto"
    if setting not in storage_driver.SETTINGS:
        raise InputError(
            f"LAYERING_BUILDAH_STORAGE_DRIVER={setting!r}: expected one of "
            + ", ".join(storage_driver.SETTINGS)
        )
    if not options.buildah_storage:
        say(f"buildah storage: LAYERING_BUILDAH_ROOT's, driver {setting} (each worker probes)")
        return setting
    buildah = sandbox.buildah_argv(layout)
    root = layout.buildah / "root"
    choice = storage_probe.resolve(
        command=buildah[0],
        root=root,
        runroot=layout.buildah / "run",
        setting=setting,
    )
    say(choice.message)
    leftover = storage_driver.leftover_warning(
        choice.driver, storage_probe.drivers_with_images(root)
    )
    if leftover is not None:
        say(f"warning: {leftover}")
    return choice.driver


def choose_signing(
    options: workdir.Options, layout: workdir.Layout, base_env: Mapping[str, str], say: workdir.Say
) -> tuple[signing_keys.KeyPair | None, str]:
    """The key pushes are signed with: the workdir's (made on first start, reused after),
    unless the environment names one (LAYERING_SIGNING_KEY) or signing is off; and what to
    say about it."""
    if base_env.get("LAYERING_SIGNING_KEY"):
        said = f"pushes signed with LAYERING_SIGNING_KEY {base_env['LAYERING_SIGNING_KEY']}"
        say(said)
        return None, said
    if not options.signing:
        say("pushes are not signed (--unsigned)")
        return None, "pushes are not signed (--unsigned)"
    pair, made = signing_keys.ensure(layout.signing)
    say(
        f"pushes signed with {'a new' if made else 'the'} sigstore key {pair.private_key} "
        f"(public key {pair.public_key})"
    )
    return pair, f"pushes signed with {pair.private_key} (public key {pair.public_key})"


def choose_isolation(
    options: workdir.Options, layout: workdir.Layout, say: workdir.Say, *, storage: str = "vfs"
) -> str:
    """The workers' LAYERING_BUILDAH_ISOLATION: the one asked for, else oci when the probe
    shows it works here, else chroot (this machine's own sandbox), said either way."""
    if options.isolation is not None:
        say(f"build isolation {options.isolation} (LAYERING_BUILDAH_ISOLATION)")
        return options.isolation
    driver = storage if storage in storage_driver.DRIVERS else "vfs"
    buildah = sandbox.buildah_argv(layout, driver) if options.buildah_storage else ["buildah"]
    try:
        isolation_probe.resolve(command=buildah[0], global_argv=buildah[1:], mode="oci")
    except PipelineError as exc:
        say(f"build isolation chroot: {exc}")
        say(f"warning: {isolation.CHROOT_WARNING}")
        return "chroot"
    say("build isolation oci: RUN steps get private PID and network namespaces")
    return "oci"


def start_all(
    options: workdir.Options,
    *,
    processes: supervisor.Supervisor,
    base_env: Mapping[str, str],
    say: workdir.Say,
) -> workdir.Started:
    """Start every process (recording it in `processes`), prepare the sandbox on first run."""
    layout = processes.layout
    local = options.repo_url is None
    _require("redis-server", "docker-registry", "git", *(("buildah", "busybox") if local else ()))
    state = workdir.read_json(layout.state_file)
    ports = supervisor.choose_ports(layout, options, state.get("ports", {}), say)
    state["ports"] = ports
    workdir.write_json(layout.state_file, state)
    secret = options.webhook_secret or sandbox.webhook_secret(layout.secret_file)
    verification_key = keys.secret(layout.verification_key_file)
    registry_host = f"127.0.0.1:{ports['registry']}"
    redis_url = start_redis(processes, port=ports["redis"], env=base_env, say=say)

    layout.registry.mkdir(parents=True, exist_ok=True)
    config = layout.registry / "config.yml"
    config.write_text(sandbox.registry_config(host=registry_host, data=layout.registry / "data"))
    layout.registries_conf.write_text(sandbox.registries_conf(registry_host))
    started = time.monotonic()
    registry = processes.start("registry", ["docker-registry", "serve", str(config)], base_env)
    supervisor.wait_until(
        supervisor.listening(ports["registry"]), child=registry, what="registry", timeout=20
    )
    say(
        f"registry on http://{registry_host} (insecure in {layout.registries_conf}) "
        f"{workdir.since(started)}"
    )

    storage = choose_storage(options, layout, say)
    build_isolation = choose_isolation(options, layout, say, storage=storage)
    signing, signing_said = choose_signing(options, layout, base_env, say)
    env = service_environment(
        base_env,
        layout=layout,
        ports=ports,
        options=options,
        secret=secret,
        redis_url=redis_url,
        verification_key=verification_key,
        build_isolation=build_isolation,
        storage=storage,
        signing=signing,
    )
    seed_tree: Path | None = None
    if local:
        layout.entitlement.mkdir(exist_ok=True)
        base = sandbox.base_image(
            layout,
            state,
            registry_host,
            env,
            say,
            driver=storage if storage in storage_driver.DRIVERS else "vfs",
        )
        if not layout.repository.exists():
            started = time.monotonic()
            seed_tree = sandbox.create_repository(
                layout.repository,
                seed=options.seed,
                base_ref=base.ref,
                registry=f"{registry_host}/layering",
            )
            say(f"created the sandbox repository {layout.repository} {workdir.since(started)}")
    webhook_url = f"http://127.0.0.1:{ports['receiver']}/webhook/git"
    if local:
        hook.install(layout.repository, url=webhook_url, secret_file=layout.secret_file)
        say(f"post-receive hook installed (posts to {webhook_url})")

    python = sys.executable
    started = time.monotonic()
    receiver = processes.start(
        "receiver",
        [python, "-m", "pipeline.cli", "serve", "--port", str(ports["receiver"])],
        env,
    )
    worker = processes.start(
        "worker",
        [
            python,
            "-m",
            "pipeline.cli",
            "worker",
            f"--queues={QUEUES}",
            f"--concurrency={options.concurrency}",
            "--hostname=up@%h",
        ],
        env,
    )
    layout.service.mkdir(parents=True, exist_ok=True)
    beat = processes.start(
        "beat",
        [
            python,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "beat",
            "--loglevel=INFO",
            "--schedule",
            str(layout.service / "celerybeat-schedule"),
        ],
        env,
    )
    dashboard = f"http://127.0.0.1:{ports['receiver']}/"
    supervisor.wait_until(
        supervisor.http_ok(f"{dashboard}readyz"),
        child=receiver,
        what="receiver",
        timeout=60,
        interval=0.1,
    )
    say(f"receiver on {dashboard} {workdir.since(started)}")
    supervisor.wait_until(
        supervisor.worker_answers(redis_url, "up"),
        child=worker,
        what="worker",
        timeout=90,
        interval=0.2,
    )
    say(
        f"worker ready (queues {QUEUES}, concurrency {options.concurrency}) "
        f"{workdir.since(started)}"
    )
    if beat.process.poll() is not None:
        raise PipelineError(f"beat exited ({beat.process.returncode}){supervisor.tail(beat)}")
    say("beat scheduler running")
    if seed_tree is not None:
        sandbox.push_seed(seed_tree)
        say("pushed main: the first build of every image in a pool is under way")
    return workdir.Started(
        dashboard_url=dashboard,
        webhook_url=webhook_url,
        clone_url=layout.repository.as_uri() if local else None,
        registry_host=registry_host,
        redis_url=f"redis://127.0.0.1:{ports['redis']}/0",
        workdir=layout.root,
        secret_file=layout.secret_file,
        redis_password_file=layout.redis_password_file,
        build_isolation=build_isolation,
        storage_driver=storage,
        signing=signing_said,
    )


def run(
    options: workdir.Options,
    *,
    base_env: Mapping[str, str],
    say: workdir.Say,
    ready: Callable[[workdir.Started], None],
) -> int:
    """Start everything, call `ready`, then wait for Ctrl-C (or a child dying) and stop."""
    layout = workdir.Layout(options.workdir.resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    supervisor.check_not_running(layout)
    processes = supervisor.Supervisor(layout)
    with supervisor.stop_on_sigterm():
        try:
            started = start_all(options, processes=processes, base_env=base_env, say=say)
            ready(started)
            while (gone := processes.exited()) is None:
                time.sleep(0.5)
            say(f"{gone.name} exited ({gone.process.returncode}){supervisor.tail(gone)}")
            return 1
        except KeyboardInterrupt:
            say("stopping (data stays in the workdir)")
            return 0
        finally:
            # a second Ctrl-C must not cut the stop short and leave processes behind
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            processes.stop(say)
            signal.signal(signal.SIGINT, signal.default_int_handler)
