"""An address Cumulo gives again to a new NIC (a deleted instance's, freed) must not stay
held by the old MAC's lease: dnsmasq would refuse the new MAC for the lease's hour. A
lease of a NIC that is gone is dropped too (nothing of a detached NIC stays)."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from cumulo.net.dnsmasq import DnsHost, stale_leases


def test_a_lease_of_a_reused_address_for_another_mac_is_stale(tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    leases.write_text("1796419402 0a:ce:1c:78:2e:0c 10.210.0.3 v1 01:0a:ce:1c:78:2e:0c\n"
                      "1796418710 0a:ce:a7:a4:5a:49 10.210.0.2 c1 *\n"
                      "1796418711 0a:ce:00:00:00:01 10.210.0.9 gone *\n")
    hosts = [DnsHost("v3", "0a:ce:ad:61:47:6b", IPv4Address("10.210.0.3")),
             DnsHost("c1", "0A:CE:A7:A4:5A:49", IPv4Address("10.210.0.2"))]
    assert stale_leases(leases, hosts) == {
        "1796419402 0a:ce:1c:78:2e:0c 10.210.0.3 v1 01:0a:ce:1c:78:2e:0c",
        "1796418711 0a:ce:00:00:00:01 10.210.0.9 gone *"}   # a NIC detached or deleted
    assert stale_leases(tmp_path / "none", hosts) == set()
