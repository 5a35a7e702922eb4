# The README's two commands: `make up` (run the pipeline on this machine) and `make test`.
# Each does all set-up on a fresh Debian machine as root: apt packages, a virtualenv, the project.

SHELL := /bin/bash
VENV ?= .venv
# test processes: most tests wait on real servers (Redis, registry, buildah, Celery), so three
# finish the suite in about half the time of one on 2 cores; each file stays on one process
# (--dist loadfile) with its module fixtures. PYTEST_WORKERS=0 runs in this process.
PYTEST_WORKERS ?= 3
PY := $(VENV)/bin/python
# runc: buildah's OCI runtime, so builds can run with oci isolation (private PID and network)
# rpm: reads the rpm databases of a build's base and result (the package diff); its rpmbuild
# makes the stand-in base's tiny packages
# prometheus: its promtool checks and unit-tests the PrometheusRule's alerts (deploy/components/
# monitoring); the server it also installs is not used
APT_PACKAGES := buildah runc skopeo docker-registry redis-server git busybox-static ca-certificates docker-compose chromium rpm prometheus
# command or file that proves each package is present, in the same order
APT_PROBES := buildah runc skopeo docker-registry redis-server git /bin/busybox /etc/ssl/certs docker-compose chromium rpmbuild promtool

.PHONY: up test setup system-packages venv lint typecheck pytest bench clean

up: setup
	$(VENV)/bin/layering up

test: setup lint typecheck pytest

setup: system-packages venv

system-packages:
	@missing=""; pkgs=($(APT_PACKAGES)); probes=($(APT_PROBES)); \
	for i in $${!pkgs[@]}; do p=$${probes[$$i]}; \
	  if [[ $$p == /* ]]; then [ -e $$p ] || missing="$$missing $${pkgs[$$i]}"; \
	  else command -v $$p >/dev/null || missing="$$missing $${pkgs[$$i]}"; fi; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root (or install:$$missing)" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports  # the room rules (pyproject.toml [tool.importlinter])

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile

bench: setup
	@for b in tests/bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
