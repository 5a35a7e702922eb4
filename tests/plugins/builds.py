"""Fixtures for builds tests (see tests/conftest.py)."""
