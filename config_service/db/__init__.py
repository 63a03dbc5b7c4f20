"""Database schema, engine and migrations. Only the config service imports this."""
