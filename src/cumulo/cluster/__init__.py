"""Several cumulod as one cluster on a shared PostgreSQL store. Membership, forwarding
and moving instances (``membership``, ``move``, ``evacuate``, ``rebalancer``,
``recover``, ``settings``); scheduling, pure code with no I/O: ``model`` (the plain
data), ``placement`` (filter, score, sample members for one instance), ``evacuation``
(where an evacuated member's instances go) and ``rebalance`` (bounded moves that lower
the imbalance). The store's allocation transaction (store/members.py) and the services
do the I/O."""
