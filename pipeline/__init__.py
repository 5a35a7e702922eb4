"""coreos-layering-pipeline: GitOps for custom layered CoreOS node images."""

__version__ = "0.1.0"
