"""Shared core of AI Bridge: the generated gRPC API (aibridge.config.v1), the CLI and
the small helpers both planes use. Nothing here touches the database."""
