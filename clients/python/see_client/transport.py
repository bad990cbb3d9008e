"""HTTP with retries, sync and async: one request loop each, sharing the policy and the error mapping.

Both transports send JSON, retry what `RetryPolicy` allows (sleeping the delay it gives), map error
answers to typed errors, and can stream server-sent events: retries apply only before the first event,
since by then the server has started work that a retry would repeat.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx

from see_client.errors import APIConnectionError, APITimeoutError, SeeError, error_for
from see_client.retry import RetryPolicy


class StreamError(SeeError):
    """The server reported an error inside a stream that had already started (HTTP status was 200)."""

    def __init__(self, error: dict) -> None:
        self.message = str(error.get("message"))
        self.type = error.get("type")
        self.code = error.get("code")
        self.param = error.get("param")
        super().__init__(f"{self.code or self.type}: {self.message}")


def _headers(api_key: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    headers = {"user-agent": "see-client/0.1", **(extra or {})}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _transport_error(error: Exception) -> SeeError:
    if isinstance(error, httpx.TimeoutException):
        return APITimeoutError(f"no answer in time: {error!r}")
    return APIConnectionError(f"could not reach the server: {error!r}")


DONE = object()


def sse_payload(line: str) -> dict | object | None:
    """The JSON payload of one SSE line, `DONE` at `[DONE]`, None for other lines; raises StreamError on errors."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return DONE
    payload = json.loads(data)
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        raise StreamError(payload["error"])
    return payload


class SyncTransport:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy,
        headers: dict[str, str] | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.retry = retry
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout, headers=_headers(api_key, headers))

    def request(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.http.request(method, path, json=body)
            except httpx.TransportError as error:
                delay = self.retry.delay_after_error(attempt, error)
                if delay is None:
                    raise _transport_error(error) from error
                time.sleep(delay)
                continue
            if response.is_success:
                return response
            delay = self.retry.delay_after_response(attempt, response)
            if delay is None:
                raise error_for(response)
            time.sleep(delay)

    def stream(self, path: str, body: dict) -> Iterator[dict]:
        attempt, started = 0, False
        while True:
            attempt += 1
            try:
                with self.http.stream("POST", path, json=body) as response:
                    if response.is_success:
                        started = True
                        for line in response.iter_lines():
                            payload = sse_payload(line)
                            if payload is DONE:
                                return
                            if payload is not None:
                                yield payload
                        return
                    response.read()
                    delay = self.retry.delay_after_response(attempt, response)
                    if delay is None:
                        raise error_for(response)
            except httpx.TransportError as error:
                delay = None if started else self.retry.delay_after_error(attempt, error)
                if delay is None:
                    raise _transport_error(error) from error
            time.sleep(delay)

    def close(self) -> None:
        self.http.close()


class AsyncTransport:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy,
        headers: dict[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.retry = retry
        self.http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=_headers(api_key, headers))

    async def request(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.http.request(method, path, json=body)
            except httpx.TransportError as error:
                delay = self.retry.delay_after_error(attempt, error)
                if delay is None:
                    raise _transport_error(error) from error
                await asyncio.sleep(delay)
                continue
            if response.is_success:
                return response
            delay = self.retry.delay_after_response(attempt, response)
            if delay is None:
                raise error_for(response)
            await asyncio.sleep(delay)

    async def stream(self, path: str, body: dict) -> AsyncIterator[dict]:
        attempt, started = 0, False
        while True:
            attempt += 1
            try:
                async with self.http.stream("POST", path, json=body) as response:
                    if response.is_success:
                        started = True
                        async for line in response.aiter_lines():
                            payload = sse_payload(line)
                            if payload is DONE:
                                return
                            if payload is not None:
                                yield payload
                        return
                    await response.aread()
                    delay = self.retry.delay_after_response(attempt, response)
                    if delay is None:
                        raise error_for(response)
            except httpx.TransportError as error:
                delay = None if started else self.retry.delay_after_error(attempt, error)
                if delay is None:
                    raise _transport_error(error) from error
            await asyncio.sleep(delay)

    async def close(self) -> None:
        await self.http.aclose()
