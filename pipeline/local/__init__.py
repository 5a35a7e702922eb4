"""`layering up`, the whole pipeline on one machine: services.py starts and stops it,
supervisor.py owns the child processes, their ports and readiness, sandbox.py makes the local
GitOps sandbox, workdir.py says where everything lives."""
