"""Host networking: bridges, veth pairs, network namespaces, nftables, IPAM. Never the store."""
