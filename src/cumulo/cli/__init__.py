"""The `cumulo` command line: a client of the public REST API only."""
