"""Fixtures for kube tests (see tests/conftest.py)."""
