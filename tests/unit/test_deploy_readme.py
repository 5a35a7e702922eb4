"""README "Deploy on OpenShift" runs: its `kubectl kustomize` commands render, and the overlay
of your own it shows pins the service image by the digest it names in every workload."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests import manifests
from tests.conftest import REPO_ROOT
from tests.manifests import containers

SECTION = (REPO_ROOT / "README.md").read_text().split("## Deploy on OpenShift", 1)[1]
SECTION = SECTION.split("\n## ", 1)[0]


def _sh_commands() -> list[str]:
    blocks = re.findall(r"^```sh\n(.*?)^```", SECTION, re.M | re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_render_commands_run() -> None:
    commands = _sh_commands()
    assert commands == [
        "kubectl kustomize deploy/overlays/openshift",
        "kubectl kustomize deploy/overlays/kubernetes",
    ]
    # the test extras' kubectl, and the one on PATH when it is another (kustomize 5.5 of
    # kubectl 1.32 crashed where 5.8 did not: both must render the same)
    kubectls = {manifests.kubectl(), shutil.which("kubectl") or manifests.kubectl()}
    for command in commands:
        outputs = set()
        for kubectl in sorted(kubectls):
            argv = [kubectl, *command.split()[1:]]
            result = subprocess.run(
                argv, capture_output=True, text=True, cwd=REPO_ROOT, check=False
            )
            assert result.returncode == 0, f"{kubectl}: {command}: {result.stderr[-2000:]}"
            assert "kind: Deployment" in result.stdout
            outputs.add(result.stdout)
        assert len(outputs) == 1, f"{command}: {sorted(kubectls)} render differently"


def test_readme_overlay_pins_the_service_image(tmp_path: Path) -> None:
    (block,) = re.findall(r"^```yaml\n(.*?)^```", SECTION, re.M | re.S)
    overlay = yaml.safe_load(block)
    (image,) = overlay["images"]
    mine = tmp_path / "deploy" / "overlays" / "mine"
    mine.mkdir(parents=True)
    shipped = os.path.relpath(manifests.DEPLOY / "overlays", mine)
    resources = [r.replace("..", shipped, 1) for r in overlay["resources"]]
    (mine / "kustomization.yaml").write_text(yaml.safe_dump({**overlay, "resources": resources}))
    service = [
        c["image"]
        for _, c in containers(manifests.render(mine))
        if c["image"].startswith(image["newName"])
    ]
    assert len(service) == 4  # web, events, builds, beat
    assert set(service) == {f"{image['newName']}@{image['digest']}"}
