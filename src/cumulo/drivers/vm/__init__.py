"""Virtual machines on QEMU (KVM where the host can, TCG otherwise)."""
