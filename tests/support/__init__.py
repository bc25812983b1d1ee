"""Helpers shared by the test suites (sample events, ...)."""
