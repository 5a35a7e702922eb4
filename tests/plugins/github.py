"""Fixtures for github tests (see tests/conftest.py)."""
