"""Data plane: the bridge and proxy daemons. Never imports database code."""
