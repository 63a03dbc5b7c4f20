"""Data access: every read and write of the config service goes through here.

Each public function takes the caller's `Subject` first, authorizes it against the
RBAC policy and returns only what that subject may see.
"""
