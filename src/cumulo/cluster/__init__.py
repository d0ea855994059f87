"""Several cumulod as one cluster on a shared PostgreSQL store. Membership, forwarding
and evacuation (``membership``, ``evacuate``, ``recover``); scheduling, pure code with
no I/O: ``model`` (the plain data), ``placement`` (filter, score, sample members for
one instance) and ``rebalance`` (bounded moves that lower the imbalance). The store's
allocation transaction (store/members.py) and the services do the I/O."""
