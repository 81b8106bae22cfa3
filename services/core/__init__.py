"""Shared plumbing: settings, database, errors, stores. Knows no domain module."""
