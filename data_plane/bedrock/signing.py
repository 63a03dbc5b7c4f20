"""SigV4 signing of one Bedrock Runtime request with botocore's signer (typed wrapper)."""

from __future__ import annotations

from collections.abc import Mapping

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from data_plane.bedrock.credentials import AwsCredentials

SERVICE = "bedrock"


def sign_headers(
    *,
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    credentials: AwsCredentials,
    region: str,
) -> dict[str, str]:
    """`headers` plus X-Amz-Date, X-Amz-Security-Token (session credentials), Authorization.

    `url` must be exactly the URL sent (path percent-encoded as on the wire) and `body`
    exactly the bytes sent: the signature covers the path, the host, every header given
    here and the SHA-256 of the body. Headers the HTTP client adds later (content-length,
    user-agent, accept-encoding) are not signed, which SigV4 allows.
    """
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    SigV4Auth(credentials.to_botocore(), SERVICE, region).add_auth(request)
    return {str(k): str(v) for k, v in request.headers.items()}
