"""The data plane's errors: one small tree. Messages never carry a secret.

    DataPlaneError                  (never raised itself)
    ├── Unusable (ValueError)       configuration a daemon cannot use; the message says why
    │   ├── BuildError              a snapshot provider cannot be served (reported in the NACK)
    │   ├── KeyPoolError            a key list cannot make a pool (empty, duplicate keys)
    │   ├── CAError                 the proxy's CA files (the daemon refuses to start)
    │   └── SpoolError              the recording spool file cannot be used (message: what to do)
    │       └── SpoolBusy           another process holds its lock
    ├── BedrockCredentialsError     no usable AWS credentials (an error answer to the client)
    ├── BudgetFull                  a daemon holds too many request bodies at once (503)
    ├── ClientError                 the client's request ends here
    │   ├── TooLarge                its head or body is over the limit (431 / 413)
    │   ├── BodyLate                its body did not arrive within the body timeout (408)
    │   └── ClientGone              it went away, or broke HTTP, before the request was in
    │       └── Silent              ... or sent (or read) nothing for too long
    └── EgressError                 the proxy will not or cannot reach the destination
        ├── Blocked                 private or reserved, not allow-listed (403)
        └── DialError               not resolved or not reached (502, without detail)

Transport failures towards an upstream are httpx's own exceptions (see
data_plane/transport), so they are not repeated here.
"""

from __future__ import annotations


class DataPlaneError(Exception):
    pass


class Unusable(DataPlaneError, ValueError):
    pass


class BuildError(Unusable):
    pass


class KeyPoolError(Unusable):
    pass


class CAError(Unusable):
    pass


class SpoolError(Unusable):
    pass


class SpoolBusy(SpoolError):
    pass


class BedrockCredentialsError(DataPlaneError):
    pass


class BudgetFull(DataPlaneError):
    pass


class ClientError(DataPlaneError):
    pass


class TooLarge(ClientError):
    pass


class BodyLate(ClientError):
    pass


class ClientGone(ClientError):
    pass


class Silent(ClientGone):
    pass


class EgressError(DataPlaneError):
    pass


class Blocked(EgressError):
    pass


class DialError(EgressError):
    pass
