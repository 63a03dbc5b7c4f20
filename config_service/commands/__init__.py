"""`aibridge` sub-commands that run against the database or serve the config service."""
