"""`aibridge` sub-commands that only talk gRPC (no database code)."""
