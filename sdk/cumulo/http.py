"""A careful HTTP client for provider REST APIs: bounded retries, pacing, one error mapping.

Every cloud provider module talks to its API through :class:`ApiClient`, so
the rules live in one place:

- requests are paced: at least ``min_interval`` seconds between any two, and
  per-path minimum intervals (e.g. Lambda allows about one launch per 10 s);
- 429 backs off, honouring ``Retry-After`` (seconds or an HTTP date), and ends
  in RateLimited when retries run out;
- 5xx answers, timeouts and dropped connections are retried with exponential
  back-off, but only for idempotent requests; a POST that may have been applied
  is never silently repeated (the caller reconciles, e.g. lists instances by name);
- provider JSON errors are mapped to cumulo exceptions through a per-provider
  :class:`ErrorMapping`; every message says what to do next;
- the API key never appears in a message, a repr or a log line: it lives in a
  :class:`~cumulo.security.credentials.Secret` and every error text is scrubbed of it.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .exceptions import CredentialsError, CumuloError, ProviderError, QuotaError, RateLimited
from .security.credentials import Secret

__all__ = ["ApiClient", "ApiError", "BearerAuth", "ErrorMapping", "parse_retry_after"]

logger = logging.getLogger("cumulo.http")

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class ApiError:
    """A provider's error answer, decoded: HTTP status, code, message and suggestion (any may be empty)."""

    status: int
    code: str = ""
    message: str = ""
    suggestion: str = ""


def _default_extract(body: Any) -> tuple[str, str, str]:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return (str(err.get("code") or ""), str(err.get("message") or ""), str(err.get("suggestion") or ""))
    return "", "", ""


@dataclass(frozen=True)
class ErrorMapping:
    """How one provider reports errors, and which cumulo exception each one becomes.

    ``codes`` maps a provider error code (exact, or a prefix ending in '/') to an
    exception class; ``hints`` adds a next step per class, and ``code_hints`` one per
    code (it wins: two codes of one class can need different steps); ``retry``
    names codes (or prefixes ending in '/') that mean "try again": retried with
    backoff like a 5xx, and, being refusals, also for requests that are not
    idempotent; ``extract`` pulls (code, message, suggestion) out of an error body.
    """

    provider: str
    codes: Mapping[str, type[CumuloError]] = field(default_factory=dict)
    hints: Mapping[type[CumuloError], str] = field(default_factory=dict)
    code_hints: Mapping[str, str] = field(default_factory=dict)
    retry: tuple[str, ...] = ()
    extract: Callable[[Any], tuple[str, str, str]] = _default_extract

    def retryable(self, error: ApiError) -> bool:
        """Whether ``error``'s code says to try again (see ``retry``)."""
        return bool(error.code) and any(error.code == c or (c.endswith("/") and error.code.startswith(c))
                                        for c in self.retry)

    def classify(self, error: ApiError) -> type[CumuloError]:
        """The exception class for ``error``: by code, then by HTTP status."""
        if error.code in self.codes:
            return self.codes[error.code]
        for prefix, cls in self.codes.items():
            if prefix.endswith("/") and error.code.startswith(prefix):
                return cls
        if error.status in (401, 403):
            return CredentialsError
        if error.status == 429:
            return RateLimited
        return ProviderError


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <key>`` from a Secret; its repr shows only the key's hint."""

    def __init__(self, secret: Secret) -> None:
        self._secret = secret

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        request.headers["Authorization"] = f"Bearer {self._secret.reveal()}"
        yield request

    def __repr__(self) -> str:
        return f"BearerAuth({self._secret!r})"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ApiClient:
    """An async JSON client for one provider API (see the module docstring for its rules).

    ``intervals`` maps a path prefix (e.g. "/instance-operations/launch") to the
    minimum seconds between two requests to it, and ``windows`` a prefix to
    ``(count, seconds)``: at most ``count`` requests to it in any ``seconds``.
    ``transport`` is for tests.
    """

    def __init__(
        self,
        base_url: str,
        *,
        secret: Secret,
        errors: ErrorMapping,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 30.0,
        min_interval: float = 0.0,
        intervals: Mapping[str, float] | None = None,
        windows: Mapping[str, tuple[int, float]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.errors = errors
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.min_interval = min_interval
        self.intervals = dict(intervals or {})
        self.windows = {p: (int(n), float(t)) for p, (n, t) in (windows or {}).items() if n > 0 and t > 0}
        self._sent_by_window: dict[str, collections.deque[float]] = {p: collections.deque() for p in self.windows}
        self._secret = secret
        self._client = httpx.AsyncClient(
            base_url=self.base_url, auth=BearerAuth(secret), timeout=timeout, transport=transport,
            headers={"Accept": "application/json", "User-Agent": "cumulo"},
        )
        self._pace_lock = asyncio.Lock()
        self._last_any = 0.0
        self._last_by_prefix: dict[str, float] = {}
        #: Requests sent, and 429 answers seen (for tests and diagnostics).
        self.sent = 0
        self.throttled = 0

    def __repr__(self) -> str:
        return f"ApiClient({self.base_url!r}, key {self._secret.hint})"

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """Whether aclose() ran (a closed client cannot send; make a new one)."""
        return self._client.is_closed

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced by its hint (defence in depth for echoed secrets)."""
        value = self._secret.reveal()
        return text.replace(value, self._secret.hint) if value else text

    async def _pace(self, path: str) -> None:
        async with self._pace_lock:
            now = time.monotonic()
            wait = self._last_any + self.min_interval - now
            prefix = next((p for p in self.intervals if path.startswith(p)), None)
            if prefix is not None:
                wait = max(wait, self._last_by_prefix.get(prefix, 0.0) + self.intervals[prefix] - now)
            window = next((p for p in self.windows if path.startswith(p)), None)
            if window is not None:
                count, seconds = self.windows[window]
                sent = self._sent_by_window[window]
                while sent and sent[0] <= now - seconds:
                    sent.popleft()
                if len(sent) >= count:  # the oldest of the last ``count`` must leave the window first
                    wait = max(wait, sent[-count] + seconds - now)
            if wait > 0:
                logger.debug("pacing %s: waiting %.2f s", path, wait)
                await asyncio.sleep(wait)
            self._last_any = time.monotonic()
            if prefix is not None:
                self._last_by_prefix[prefix] = self._last_any
            if window is not None:
                self._sent_by_window[window].append(self._last_any)

    def _delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + random.random() / 2)

    async def request(
        self, method: str, path: str, *, json: Any = None, idempotent: bool | None = None
    ) -> Any:
        """Send one request and return the decoded JSON body; raise a cumulo exception on failure.

        ``idempotent`` defaults to True for GET/PUT/DELETE and False for POST: a
        non-idempotent request is retried only when it surely did not reach the
        server (connection refused, 429), never after a timeout or a 5xx.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in _IDEMPOTENT
        what = f"{method} {path}"
        attempt = 0  # failures (5xx, timeouts, dropped connections)
        throttled = 0  # 429 answers: bounded separately, so that a burst does not eat the 5xx budget
        while True:
            await self._pace(path)
            self.sent += 1
            started = time.monotonic()
            try:
                response = await self._client.request(method, path, json=json)
            except httpx.ConnectError as exc:  # never reached the server: safe to retry
                failure = f"could not connect ({type(exc).__name__})"
                retry = True
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                failure = f"no answer ({type(exc).__name__})"
                retry = idempotent
            else:
                logger.debug("%s -> %s (%.2f s)", what, response.status_code, time.monotonic() - started)
                if response.status_code < 400:
                    return self._decode(response, what)
                error = self._error(response)
                if response.status_code == 429:
                    self.throttled += 1
                    wait = parse_retry_after(response.headers.get("Retry-After"))
                    if throttled >= self.max_retries:
                        raise self._raise(RateLimited, error, what, retry_after=wait)
                    wait = self._delay(throttled) if wait is None else min(wait, self.max_backoff)
                    logger.info("%s rate-limited by %s; retrying in %.1f s", what, self.errors.provider, wait)
                    throttled += 1
                    await asyncio.sleep(wait)
                    continue
                if self.errors.retryable(error):  # "try again": a refusal below 500 surely did not apply
                    failure = f"HTTP {response.status_code}, {error.code}" + (
                        f" ({error.message})" if error.message else "")
                    retry = idempotent or response.status_code < 500
                elif response.status_code >= 500:
                    failure = f"HTTP {response.status_code}" + (f" ({error.message})" if error.message else "")
                    retry = idempotent
                else:
                    raise self._raise(self.errors.classify(error), error, what)
            if not retry:
                exc_out = ProviderError(self.redact(
                    f"{self.errors.provider} {what} failed: {failure}. The request may or may not have been "
                    "applied; cumulo will check what exists before going on."
                ))
                exc_out.maybe_applied = True  # type: ignore[attr-defined]
                raise exc_out
            if attempt >= self.max_retries:
                raise ProviderError(self.redact(
                    f"{self.errors.provider} {what} failed {attempt + 1} times: {failure}. The service may be "
                    "down or unreachable; check its status page and try again later."
                ))
            wait = self._delay(attempt)
            logger.info("%s failed: %s; retry %d/%d in %.1f s", what, failure, attempt + 1, self.max_retries, wait)
            attempt += 1
            await asyncio.sleep(wait)

    def _decode(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ProviderError(
                f"{self.errors.provider} answered {what} with something that is not JSON "
                f"(HTTP {response.status_code}); check cumulo's base-url setting for this provider"
            ) from None

    def _error(self, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        code, message, suggestion = self.errors.extract(body)
        return ApiError(response.status_code, code, message, suggestion)

    def _raise(self, cls: type[CumuloError], error: ApiError, what: str, **kwargs: Any) -> CumuloError:
        text = f"{self.errors.provider} refused {what} (HTTP {error.status}"
        text += f", {error.code})" if error.code else ")"
        if error.message:
            text += f": {error.message.rstrip('.')}."
        if error.suggestion:
            text += f" {error.suggestion.rstrip('.')}."
        if issubclass(cls, CredentialsError):
            text += f" The key used was {self._secret.hint} from {self._secret.source}."
        hint = self.errors.code_hints.get(error.code) or self.errors.hints.get(cls)
        if hint:
            text += f" {hint}"
        exc = cls(self.redact(text), **kwargs) if kwargs else cls(self.redact(text))
        exc.status = error.status  # type: ignore[attr-defined]
        exc.code = error.code  # type: ignore[attr-defined]
        return exc


#: Next steps shared by providers that do not say better.
DEFAULT_HINTS: dict[type[CumuloError], str] = {
    CredentialsError: "Check the API key (cumulo shows only its last 4 characters) and that it is not revoked.",
    QuotaError: "Ask the provider to raise the limit, or request fewer or smaller instances.",
    RateLimited: "Wait a minute and try again.",
}
