"""The two Solana JSON-RPC reads SOL payments need, at `finalized` commitment, over the
`SOLANA_RPC_URL` endpoints used in turn (docs/architecture.md, "SOL payments")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

from pydantic import ValidationError
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.jsonrpc import JsonRpcRequest, SolanaJsonRpcError
from solders.pubkey import Pubkey
from solders.signature import Signature

from services.sol_price import safe_rpc_url

logger = logging.getLogger("alertbot.sol_rpc")

__all__ = ["MAX_SIGNATURES", "SolRpc", "SolRpcUnavailable", "check_address", "check_signature"]

#: getSignaturesForAddress gives at most this many per call.
MAX_SIGNATURES: Final[int] = 1000
_COMMITMENT: Final[str] = "finalized"


class SolRpcUnavailable(Exception):
    """No endpoint answered the call; the message says why the last one did not (safe to log)."""


def check_address(address: str) -> str:
    """`address` if it is a base58 32-byte key, else ValueError."""
    Pubkey.from_string(address)
    return address


def check_signature(signature: str) -> str:
    """`signature` if it is a base58 64-byte transaction signature, else ValueError."""
    Signature.from_string(signature)
    return signature


class SolRpc:
    """A Solana JSON-RPC client over several endpoints (solana-py's `AsyncClient` per endpoint)."""

    def __init__(self, urls: Sequence[str], api_limit: asyncio.Semaphore, *, timeout: float = 10.0) -> None:
        if not urls:
            raise ValueError("at least one Solana RPC URL is needed")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.urls: tuple[str, ...] = tuple(urls)
        self.api_limit = api_limit
        self.timeout = timeout
        self._clients: dict[int, AsyncClient] = {}
        self._next = 0  # the endpoint the next call starts with: the last one that answered
        self._request_id = 0
        self._logged_errors: dict[int, str] = {}
        self.failures = 0  # endpoint attempts that failed
        self.last_error: str | None = None  # safe to log
        self.last_url: int | None = None  # index in urls of the latest attempt

    # --- the reads -------------------------------------------------------------------------

    async def signatures_for_address(
        self,
        address: str,
        *,
        limit: int = MAX_SIGNATURES,
        before: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        """Finalized transactions involving `address`, newest first (signature, slot, err, memo,
        blockTime, confirmationStatus), from `before` back to `until` (both exclusive)."""
        check_address(address)
        if not 1 <= limit <= MAX_SIGNATURES:
            raise ValueError(f"limit must be 1..{MAX_SIGNATURES}")
        config: dict[str, Any] = {"commitment": _COMMITMENT, "limit": limit}
        if before is not None:
            config["before"] = check_signature(before)
        if until is not None:
            config["until"] = check_signature(until)
        result = await self.call("getSignaturesForAddress", [address, config])
        if not isinstance(result, list) or not all(
            isinstance(item, dict) and isinstance(item.get("signature"), str) for item in result
        ):
            raise SolRpcUnavailable("getSignaturesForAddress did not answer a list of signatures")
        return result

    async def transaction(self, signature: str) -> dict[str, Any] | None:
        """The finalized transaction `signature` in `jsonParsed` encoding (v0 ones too), or None
        when the node has none (unknown, or not finalized yet)."""
        check_signature(signature)
        config = {"encoding": "jsonParsed", "commitment": _COMMITMENT, "maxSupportedTransactionVersion": 0}
        result = await self.call("getTransaction", [signature, config])
        if result is not None and not isinstance(result, dict):
            raise SolRpcUnavailable("getTransaction did not answer a transaction object")
        return result

    # --- the rotation ----------------------------------------------------------------------

    async def call(self, method: str, params: list[Any]) -> Any:
        """The `result` of one JSON-RPC call, from the first endpoint (in turn) that answers."""
        count = len(self.urls)
        start = self._next
        error = "no endpoint tried"
        for step in range(count):
            index = (start + step) % count
            self.last_url = index
            try:
                result = await self._attempt(index, method, params)
            except _AttemptFailed as exc:
                error = str(exc)
                self._failed(index, method, error)
                self._next = (index + 1) % count
                continue
            self._next = index
            if self._logged_errors.pop(index, None) is not None:
                logger.info("sol rpc: endpoint %d (%s) answers again", index, safe_rpc_url(self.urls[index]))
            return result
        raise SolRpcUnavailable(f"{method}: none of the {count} Solana RPC endpoints answered ({error})")

    async def _attempt(self, index: int, method: str, params: list[Any]) -> Any:
        self._request_id += 1
        request = JsonRpcRequest(id=self._request_id, method=method, params=params)
        client = self._client(index)
        try:
            async with self.api_limit:
                # The client's own timeout bounds each phase of the request; this bounds the whole.
                async with asyncio.timeout(self.timeout):
                    return await client.send_rpc_request(request, Any)
        except TimeoutError:
            raise _AttemptFailed(f"timed out after {self.timeout:g}s") from None
        except SolanaJsonRpcError as exc:
            raise _AttemptFailed(f"JSON-RPC error {exc.code}: {str(exc.message)[:200]}") from None
        except SolanaRpcException as exc:
            # HTTP status errors (429, 5xx), connection failures, the client's own timeouts. Only
            # the cause's class and status: messages can quote the URL, and URLs can hold API keys.
            raise _AttemptFailed(_transport_error(exc)) from None
        except (ValidationError, ValueError) as exc:
            raise _AttemptFailed(f"not a JSON-RPC answer ({type(exc).__name__})") from None

    def _client(self, index: int) -> AsyncClient:
        client = self._clients.get(index)
        if client is None:
            client = AsyncClient(self.urls[index], timeout=self.timeout, max_transport_retries=0)
            self._clients[index] = client
        return client

    def _failed(self, index: int, method: str, error: str) -> None:
        self.failures += 1
        self.last_error = error
        url = safe_rpc_url(self.urls[index])
        # Once per endpoint and error: a watcher polling through an outage must not flood the log.
        level = logging.DEBUG if self._logged_errors.get(index) == error else logging.WARNING
        self._logged_errors[index] = error
        logger.log(level, "sol rpc: %s on endpoint %d (%s): %s", method, index, url, error)

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()

    async def __aenter__(self) -> SolRpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _AttemptFailed(Exception):
    """One endpoint did not answer usably; the message is safe to log."""


def _transport_error(exc: SolanaRpcException) -> str:
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return f"HTTP {status}"
    return f"request failed ({type(cause).__name__ if cause is not None else type(exc).__name__})"
