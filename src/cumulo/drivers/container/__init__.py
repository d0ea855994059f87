"""OS-level containers: an OCI bundle per instance, run by runc/crun under conmon."""
