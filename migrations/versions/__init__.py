"""Alembic revisions (a package so it ships with the wheel)."""
