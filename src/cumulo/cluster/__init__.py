"""Several cumulod as one cluster on a shared PostgreSQL store: membership, forwarding,
placement at launch, evacuation."""
