"""Scale-out scheduling, pure code with no I/O: ``model`` (the plain data), ``placement``
(filter, score, sample members for one instance) and ``rebalance`` (bounded moves that
lower the imbalance).
The store's allocation transaction (store/members.py) and the services do the I/O."""
