"""Fixtures and helpers the tests of several packages share."""
