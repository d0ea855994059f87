"""Use cases: turn API requests into operations that drivers carry out."""
