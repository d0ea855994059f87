"""Instance drivers: each kind of instance behind one narrow Protocol (see base.py)."""
