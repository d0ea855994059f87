"""Persistence: the only place SQL lives. SQLite by default, portable to PostgreSQL."""
