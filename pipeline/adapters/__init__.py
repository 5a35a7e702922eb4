"""Thin adapters: the only modules that talk to the world (files, git, buildah, registry,
GitHub, Kubernetes, Redis). Each translates library errors into pipeline.errors at the edge."""
