"""Storage pools: where instance roots, VM disks, volumes and snapshots live on the host."""
