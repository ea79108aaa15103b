"""Fixtures for the broker's tests: the end-to-end federation, for the operator endpoints."""

from tests.e2e.conftest import federation_factory

__all__ = ["federation_factory"]
