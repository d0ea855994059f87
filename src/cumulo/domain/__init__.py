"""Pure data and state machines: no I/O, no imports from other layers."""
