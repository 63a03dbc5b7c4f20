"""The console's pages, one module per area; each `register(router)` adds its routes."""
