"""Control plane: owns the provider database, seeds it, authorizes, serves snapshots."""
