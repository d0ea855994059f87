"""The benchmark lab: run the same workloads natively and in instances, store raw samples
in a versioned results file (schema.py), summarise them (stats.py) and report them."""
