"""Bandwidth limits of one NIC, both ways, from its host end (instances cannot undo them).

What the instance receives leaves the host end: an htb class on that end caps it.
What the instance sends arrives at the host end: its ingress is redirected to an
ifb device (``cu-i<hex>`` for NIC ``cu-v<hex>``) whose htb class caps it. The
ifb goes away when the limit is removed or the NIC is detached.
"""

from __future__ import annotations

from cumulo.net import netlink, tc


def ifb_name(host_name: str) -> str:
    return "cu-i" + host_name[4:]


def shape(host_name: str, ingress: int | None, egress: int | None,
          burst: int | None = None) -> None:
    """Cap what the instance receives (``ingress``) and sends (``egress``), bit/s; None: free."""
    if ingress:
        tc.limit_egress(host_name, ingress, burst)
    else:
        tc.clear(host_name)
    ifb = ifb_name(host_name)
    if egress:
        netlink.create_ifb(ifb)
        tc.limit_egress(ifb, egress, burst)
        netlink.redirect_ingress(host_name, ifb)
    else:
        netlink.clear_ingress(host_name)
        netlink.delete_link(ifb)


def unshape(host_name: str) -> None:
    """No ifb left for a NIC that is going away (its own qdiscs go with its link)."""
    netlink.delete_link(ifb_name(host_name))
