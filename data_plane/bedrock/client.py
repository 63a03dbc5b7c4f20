"""`BedrockClient`: Anthropic Messages requests sent to Bedrock InvokeModel[WithResponseStream].

Responses come back in the Anthropic format: InvokeModel's JSON already is an Anthropic
message; the response stream is re-framed as Anthropic SSE (see `eventstream`); Bedrock
errors become Anthropic error bodies with the matching status (see `translate.map_error`).
Transport failures before a response (connect/read timeouts) propagate as `httpx` errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from data_plane.bedrock.config import BedrockConfig
from data_plane.bedrock.credentials import CredentialResolver
from data_plane.bedrock.results import BedrockStream, UpstreamResult
from data_plane.bedrock.signing import sign_headers
from data_plane.bedrock.translate import (
    bedrock_body,
    bedrock_model_id,
    beta_flags,
    dumps,
    error_body,
    error_message,
    map_error,
)
from data_plane.errors import BedrockCredentialsError

Headers = Mapping[str, str] | Iterable[tuple[str, str]]

JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
_METRIC_HEADERS = {
    "x-amzn-bedrock-input-token-count": "inputTokenCount",
    "x-amzn-bedrock-output-token-count": "outputTokenCount",
    "x-amzn-bedrock-invocation-latency": "invocationLatency",
}


class BedrockClient:
    """Sends Anthropic Messages bodies to one Bedrock provider, SigV4-signed."""

    def __init__(
        self,
        config: BedrockConfig,
        http: httpx.AsyncClient,
        *,
        credentials: CredentialResolver | None = None,
    ) -> None:
        self.config = config
        self._http = http
        self._credentials = credentials or CredentialResolver(config)

    def __repr__(self) -> str:
        return f"BedrockClient({self.config!r})"

    def model_id(self, model: object) -> str:
        """The Bedrock model id a request's Anthropic `model` is sent to."""
        return bedrock_model_id(model, self.config)

    async def invoke(self, body: Mapping[str, Any], headers: Headers = ()) -> UpstreamResult:
        """InvokeModel: one Anthropic message (or Anthropic error) back."""
        model_id = self.model_id(body.get("model"))
        request = await self._request(model_id, "invoke", body, headers)
        if not isinstance(request, httpx.Request):
            return UpstreamResult(502, dict(JSON_HEADERS), dumps(request), model_id)
        response = await self._http.send(request)
        metrics = {
            key: int(response.headers[name])
            for name, key in _METRIC_HEADERS.items()
            if response.headers.get(name, "").isdigit()
        }
        if response.status_code == 200:
            out_headers = {"content-type": response.headers.get("content-type", "application/json")}
            out_headers.update(_request_id(response))
            return UpstreamResult(200, out_headers, response.content, model_id, metrics)
        status, err = _upstream_error(response)
        return UpstreamResult(
            status, {**JSON_HEADERS, **_request_id(response)}, dumps(err), model_id, metrics
        )

    async def stream(self, body: Mapping[str, Any], headers: Headers = ()) -> BedrockStream:
        """InvokeModelWithResponseStream: returns once the upstream status is known."""
        model_id = self.model_id(body.get("model"))
        request = await self._request(model_id, "invoke-with-response-stream", body, headers)
        if not isinstance(request, httpx.Request):
            return BedrockStream(
                status=502, headers=dict(JSON_HEADERS), model_id=model_id, error=request
            )
        response = await self._http.send(request, stream=True)
        if response.status_code != 200:
            try:
                await response.aread()
            finally:
                await response.aclose()
            status, err = _upstream_error(response)
            return BedrockStream(
                status=status,
                headers={**JSON_HEADERS, **_request_id(response)},
                model_id=model_id,
                error=err,
            )
        return BedrockStream(
            status=200,
            headers={**SSE_HEADERS, **_request_id(response)},
            model_id=model_id,
            response=response,
        )

    async def _request(
        self, model_id: str, action: str, body: Mapping[str, Any], headers: Headers
    ) -> httpx.Request | dict[str, Any]:
        """The signed request; the Anthropic error body (for a 502) when no credentials can
        be had."""
        payload = dumps(bedrock_body(body, beta_flags(headers)))
        url = f"{self.config.endpoint}/model/{quote(model_id, safe='')}/{action}"
        accept = "application/json" if action == "invoke" else "application/vnd.amazon.eventstream"
        try:
            credentials = await self._credentials.get()
        except BedrockCredentialsError as exc:
            return error_body("api_error", f"Bedrock credentials unavailable: {exc}")
        signed = sign_headers(
            method="POST",
            url=url,
            body=payload,
            headers={"content-type": "application/json", "accept": accept},
            credentials=credentials,
            region=self.config.region,
        )
        return self._http.build_request("POST", url, content=payload, headers=signed)


def _request_id(response: httpx.Response) -> dict[str, str]:
    rid = response.headers.get("x-amzn-requestid")
    return {"x-amzn-requestid": rid} if rid else {}


def _upstream_error(response: httpx.Response) -> tuple[int, dict[str, Any]]:
    aws_type = response.headers.get("x-amzn-errortype")
    if not aws_type:
        try:
            parsed = response.json()
            aws_type = parsed.get("__type") if isinstance(parsed, dict) else None
        except ValueError:
            aws_type = None
    error_type, status = map_error(aws_type, response.status_code)
    default = f"Bedrock returned HTTP {response.status_code}"
    return status, error_body(error_type, error_message(response.content, default))
