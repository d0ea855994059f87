"""What this host can do (probe) and thin helpers over its kernel interfaces (cgroups)."""
