"""Alembic migrations: one linear history that runs on Postgres and SQLite."""
