"""Every command in README.md is run by a test: the fenced `sh` blocks are extracted, and each
command is either run here or named with the test that runs it (which must exist). Also: the
configuration table lists every setting, and the Argo CD Applications point at real env
branches and directories."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.core.settings import Settings
from tests import services

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
RUN_HERE = "tests/unit/test_readme.py"
E2E = "tests/e2e/test_up.py"

# command -> the test that runs it ("file::name"; a fixture counts when it runs the command)
COVERAGE: dict[str, str] = {
    # `make up` = setup, then `layering up` (test_make_targets checks the recipe)
    "make up": f"{E2E}::up",
    "make test": f"{RUN_HERE}::test_make_targets",  # and CI runs it whole
    "git clone file://$PWD/.layering/gitops.git gitops && cd gitops": f"{E2E}::up",
    "sed -i 's|^RUN rpm-ostree install htop|RUN echo hello > /etc/motd\\n&|' "
    "images/htop/Containerfile": f"{RUN_HERE}::test_sandbox_edit_command_inserts_before_install",
    "git commit -am 'htop: motd' && git push origin main": (
        f"{E2E}::test_push_builds_the_image_into_the_local_registry"
    ),
    "git checkout env/nonprod && git merge --no-edit main && git push": (
        f"{E2E}::test_merge_into_nonprod_commits_the_machineconfig"
    ),
    "layering lint --repo .": f"{RUN_HERE}::test_repository_commands_run",
    "layering plan --repo . --from HEAD~1 --to HEAD": f"{RUN_HERE}::test_repository_commands_run",
    "layering lint --repo . --image htop --built registry.example.com/layering/htop:latest": (
        "tests/integration/test_content_lint_e2e.py::"
        "test_lint_built_checks_a_pushed_image_under_the_repository_waivers"
    ),
    "docker-compose config": (
        "tests/unit/test_deployment_files.py::test_compose_file_is_accepted_by_docker_compose"
    ),
    "layering install-hook --repo /srv/git/gitops.git "
    "--url http://layering.example.com:8080/webhook/git "
    "--secret-file /etc/layering/webhook-secret": f"{RUN_HERE}::test_install_hook_command_runs",
    "layering worker --queues builds --concurrency 4 --hostname builds@%h": (
        f"{RUN_HERE}::test_scaling_worker_command_starts_a_builds_worker"
    ),
    "kubectl kustomize deploy/overlays/openshift": (
        "tests/unit/test_deploy_readme.py::test_readme_render_commands_run"
    ),
    "layering signing-key create --dir signing": (
        "tests/integration/test_signing.py::"
        "test_signing_key_create_writes_a_key_pushes_are_signed_with_and_never_overwrites_it"
    ),
    "layering upgrade --cluster nonprod --release "
    "quay.io/openshift-release-dev/ocp-release:4.16.3-x86_64 --open-pr": (
        "tests/integration/test_upgrade.py::test_open_pr_builds_on_the_new_base"
    ),
    "kubectl kustomize deploy/overlays/kubernetes": (
        "tests/unit/test_deploy_readme.py::test_readme_render_commands_run"
    ),
}


def readme_commands() -> list[str]:
    """Lines of the ```sh blocks, trailing `# comments` removed."""
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.M | re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def test_every_command_is_covered_by_a_named_test() -> None:
    commands = readme_commands()
    assert set(commands) == set(COVERAGE), (
        f"README commands without a test: {sorted(set(commands) - set(COVERAGE))}; "
        f"entries no longer in the README: {sorted(set(COVERAGE) - set(commands))}"
    )
    for command, node in COVERAGE.items():
        path, name = node.split("::")
        text = (REPO_ROOT / path).read_text()
        assert re.search(rf"^def {re.escape(name)}\(", text, re.M), f"{command!r}: {node} missing"


def _layering(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_repository_commands_run() -> None:
    for command in ("layering lint --repo .", "layering plan --repo . --from HEAD~1 --to HEAD"):
        assert command in readme_commands()
        result = _layering(*command.split()[1:], cwd=REPO_ROOT)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    assert "0 errors" in _layering("lint", "--repo", ".", cwd=REPO_ROOT).stdout


def test_make_targets() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    up = re.search(r"^up: (.*)\n\t(.*)$", makefile, re.M)
    assert up is not None
    assert "setup" in up.group(1)
    assert up.group(2).strip() == "$(VENV)/bin/layering up"
    test = re.search(r"^test: (.*)$", makefile, re.M)
    assert test is not None
    assert test.group(1).split() == ["setup", "lint", "typecheck", "pytest"]


def test_sandbox_edit_command_inserts_before_install(tmp_path: Path) -> None:
    from tests.conftest import require_tools

    require_tools("sed")
    command = next(c for c in readme_commands() if c.startswith("sed -i"))
    containerfile = tmp_path / "images" / "htop" / "Containerfile"
    containerfile.parent.mkdir(parents=True)
    original = (REPO_ROOT / "images" / "htop" / "Containerfile").read_text()
    containerfile.write_text(original)
    subprocess.run(["sh", "-c", command], cwd=tmp_path, check=True)
    changed = containerfile.read_text()
    assert changed == original.replace(
        "RUN rpm-ostree install htop", "RUN echo hello > /etc/motd\nRUN rpm-ostree install htop"
    )


def test_install_hook_command_runs(tmp_path: Path) -> None:
    command = next(c for c in readme_commands() if c.startswith("layering install-hook"))
    bare = tmp_path / "srv" / "git" / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    secret = tmp_path / "etc" / "layering" / "webhook-secret"
    secret.parent.mkdir(parents=True)
    secret.write_text("s3cret\n")
    args = command.replace("/srv/", f"{tmp_path}/srv/").replace("/etc/", f"{tmp_path}/etc/")
    result = _layering(*args.split()[1:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (bare / "hooks" / "post-receive").stat().st_mode & 0o111
    # the hook drives the pipeline in tests/integration/test_webhook_e2e.py
    # (test_post_receive_hook_drives_plain_git_push) and tests/e2e/test_up.py


@pytest.mark.integration
def test_scaling_worker_command_starts_a_builds_worker(tmp_path: Path) -> None:
    from pipeline.adapters.environment import load_settings
    from workers import app as celery_app

    # a Redis of its own: the session's may have other tests' workers on it
    redis_server = services.RedisServer(tmp_path / "redis").start()
    command = next(c for c in readme_commands() if c.startswith("layering worker"))
    env = {**os.environ, "LAYERING_REDIS_URL": redis_server.url, "LAYERING_WORKDIR": str(tmp_path)}
    process = services.start(
        [sys.executable, "-m", "pipeline.cli", *command.split()[1:]],
        log=tmp_path / "worker.log",
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        app = celery_app.create_app(load_settings(redis_url=redis_server.url))
        deadline = time.monotonic() + 30
        queues: list[str] = []
        while time.monotonic() < deadline and not queues:
            assert process.poll() is None, (tmp_path / "worker.log").read_text()
            replies = app.control.inspect(timeout=0.5).active_queues() or {}
            queues = [q["name"] for host, qs in replies.items() if "builds@" in host for q in qs]
        assert queues == ["builds"]
    finally:
        services.stop_process(process)
        redis_server.stop()


def test_configuration_table_lists_every_setting() -> None:
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = (
            [str(choice) for choice in alias.choices]
            if alias is not None and hasattr(alias, "choices")
            else [f"LAYERING_{name.upper()}"]
        )
        assert any(f"`{env}`" in table for env in names), f"README lacks {names[0]}"


def test_argo_cd_applications_follow_the_environment_branches() -> None:
    blocks = re.findall(r"^```yaml\n(.*?)^```", README.read_text(), re.M | re.S)
    applications = [
        document
        for block in blocks
        for document in yaml.safe_load_all(block)
        if document and document.get("kind") == "Application"
    ]
    assert {a["spec"]["source"]["targetRevision"] for a in applications} == {
        "env/nonprod",
        "env/prod",
    }
    for application in applications:
        source = application["spec"]["source"]
        environment = source["targetRevision"].removeprefix("env/")
        cluster_file = REPO_ROOT / "clusters" / environment / "cluster.yaml"
        assert yaml.safe_load(cluster_file.read_text())["environment"] == environment
        assert source["path"] == f"clusters/{environment}/machineconfigs"
        assert application["spec"]["syncPolicy"]["automated"]["prune"] is True
