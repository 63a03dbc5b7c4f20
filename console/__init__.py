"""The web console: one more client of the config service's gRPC API, in a browser.

Every page is fetched with the signed-in user's own gateway token, so the RBAC policy
stays in the config service; the console never touches the database and keeps the
token server-side only (sessions.py).
"""
