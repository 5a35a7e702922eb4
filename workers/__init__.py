"""Celery side of the pipeline: the app, its tasks and the buildah wrapper."""
