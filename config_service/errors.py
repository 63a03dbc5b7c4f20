"""The config service's errors: a small tree, mapped to gRPC status codes in one place.

    ConfigError                      (never raised itself)
    ├── InvalidArgument(field, msg)  -> INVALID_ARGUMENT, the offending field named
    ├── NotFound                     -> NOT_FOUND
    ├── AlreadyExists                -> ALREADY_EXISTS
    ├── FailedPrecondition           -> FAILED_PRECONDITION
    ├── Unauthenticated              -> UNAUTHENTICATED (missing, unknown or revoked token)
    ├── PermissionDenied             -> PERMISSION_DENIED (the role lacks the action)
    ├── ResourceExhausted            -> RESOURCE_EXHAUSTED (a per-caller limit is reached)
    └── Unavailable                  -> UNAVAILABLE (the database cannot be reached)

Messages are shown to callers as they are: they never carry a secret.
"""

from __future__ import annotations

import grpc


class ConfigError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init_subclass__(cls, code: grpc.StatusCode) -> None:
        """Each subclass names its status code: `class NotFound(ConfigError, code=...)`."""
        super().__init_subclass__()
        cls.code = code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ConfigError, code=grpc.StatusCode.INVALID_ARGUMENT):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class NotFound(ConfigError, code=grpc.StatusCode.NOT_FOUND): ...


class AlreadyExists(ConfigError, code=grpc.StatusCode.ALREADY_EXISTS): ...


class FailedPrecondition(ConfigError, code=grpc.StatusCode.FAILED_PRECONDITION): ...


class Unauthenticated(ConfigError, code=grpc.StatusCode.UNAUTHENTICATED): ...


class PermissionDenied(ConfigError, code=grpc.StatusCode.PERMISSION_DENIED): ...


class ResourceExhausted(ConfigError, code=grpc.StatusCode.RESOURCE_EXHAUSTED): ...


class Unavailable(ConfigError, code=grpc.StatusCode.UNAVAILABLE): ...
