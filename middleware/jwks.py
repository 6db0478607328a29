"""Better Auth's JWKS: fetched lazily, cached, re-fetched for an unknown `kid` (docs/api.md:
Authentication).

Policy, chosen over PyJWKClient's own cache (whose 30 s cooldown would reject a freshly rotated
key for up to 30 s):
- the key set is cached for CACHE_SECONDS; a known `kid` within that time costs nothing;
- an unknown `kid`, or a stale set, triggers a fetch unless a fetch started after the request
  arrived (its answer already covers this token, signed before it arrived); fetches are
  single-flight and at least MIN_REFETCH_SECONDS apart, so a flood of made-up `kid`s costs the
  JWKS server at most one request per MIN_REFETCH_SECONDS;
- when a fetch fails, keys already cached keep working (stale-if-error, retried every
  RETRY_FAILED_SECONDS); an uncached `kid` is then KeysUnavailable (503), never a hang: each
  fetch times out after FETCH_TIMEOUT_SECONDS.
"""

import asyncio
import logging
import time

from jwt import PyJWK, PyJWKClient
from starlette.concurrency import run_in_threadpool

from middleware.tokens import InvalidToken, KeysUnavailable

log = logging.getLogger("todo.jwks")

CACHE_SECONDS = 300
MIN_REFETCH_SECONDS = 1.0
FETCH_TIMEOUT_SECONDS = 5
RETRY_FAILED_SECONDS = 30


class JWKSKeys:
    """Signing keys of the JWKS at `url`, by `kid`. Raises PyJWKClientError for a non-HTTP(S)
    url."""

    def __init__(self, url: str) -> None:
        self.url = url
        # PyJWKClient fetches and parses; the caching policy is ours (cache_jwk_set=False).
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=FETCH_TIMEOUT_SECONDS)
        self._keys: dict[str, PyJWK] = {}
        self._fetched = -float("inf")  # monotonic start of the last successful fetch
        self._attempted = -float("inf")  # monotonic start of the last fetch, failed or not
        self._failing = False
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> PyJWK:
        """The verification key for `kid`.

        Raises InvalidToken when the JWKS, fetched after the request arrived, has no such key,
        and KeysUnavailable when it cannot be fetched and the key is not cached.
        """
        arrived = time.monotonic()
        key = self._keys.get(kid)
        if key is not None and not self._stale(arrived):
            return key
        async with self._lock:
            if self._attempted <= arrived:  # no fetch has started since this request came in
                await self._fetch()
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._failing:
            raise KeysUnavailable(f"JWKS {self.url} is unreachable")
        raise InvalidToken(f"no key {kid!r} in the JWKS")

    def _stale(self, now: float) -> bool:
        if self._failing:  # serve cached keys, retrying the JWKS now and then
            return now - self._attempted > RETRY_FAILED_SECONDS
        return now - self._fetched > CACHE_SECONDS

    async def _fetch(self) -> None:
        wait = self._attempted + MIN_REFETCH_SECONDS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        started = self._attempted = time.monotonic()
        try:
            keys = await run_in_threadpool(self._client.get_signing_keys)
        except Exception as error:  # noqa: BLE001 - unreachable, slow, or not a usable JWKS
            # Beyond PyJWTError, ValueError and OSError, PyJWT lets through what a malformed
            # answer raises while parsed (TypeError for a non-string `alg`, RecursionError for
            # deeply nested JSON): any failure here means no usable keys, never a 500.
            self._failing = True
            log.error("JWKS fetch from %s failed (cached keys still used): %r", self.url, error)
            return
        # A key without a kid can never be chosen: a token must name its key (tokens.py).
        self._keys = {key.key_id: key for key in keys if key.key_id is not None}
        self._fetched, self._failing = started, False
        log.info("fetched JWKS %s: %d keys", self.url, len(keys))
