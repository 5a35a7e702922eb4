"""Fixtures for gitrepos tests (see tests/conftest.py)."""
