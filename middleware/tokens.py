"""Bearer token verification (docs/api.md: Authentication; RFC 8725 JWT best practices).

A verifier is an async callable `token -> Caller` that raises InvalidToken or KeysUnavailable.
The key source is chosen from the algorithm family in the token's header, and each key source
accepts only its own pinned algorithms, so a header can never pick the key or downgrade it.
"""

import time
from collections.abc import Awaitable, Callable, Container, Iterable
from dataclasses import dataclass

import jwt
from cachetools import TLRUCache

LEEWAY_SECONDS = 30
# docs/api.md: Authentication, the first present wins
USER_ID_CLAIMS = ("sub", "user_id", "userId", "id")
MAX_CLAIM_LENGTH = 255
VERIFIED_SECONDS = 60  # longest a verified token is trusted without checking it again
VERIFIED_MAX = 4096  # verified tokens remembered per process
NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")
LAST_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime holds


class InvalidToken(Exception):
    """The token is malformed, forged, expired or names no user (401 invalid_token)."""


class KeysUnavailable(Exception):
    """The key needed to check the token cannot be fetched now (503, retry later)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user: `id` from the token, `email` and `name` when the claims carry
    them, and the token's `iat`, which tells newer claims from older ones."""

    id: str
    email: str | None = None
    name: str | None = None
    issued_at: float | None = None  # the token's `iat` (seconds), when it has one


Verifier = Callable[[str], Awaitable[Caller]]


def _clean(value: object) -> str | None:
    """A claim usable as text in the database: a non-empty string, no NUL, valid UTF-8."""
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_LENGTH:
        return None
    if "\x00" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from "\ud800" in the JSON
        return None
    return value


def check_numeric_dates(claims: dict) -> dict:
    """`claims` if each of exp, nbf and iat present is a NumericDate (RFC 7519 section 2: a JSON
    number of seconds since the epoch), else InvalidToken. PyJWT reads them with `int()`, which
    also takes strings ("123"), booleans and integers too large for a float; here only finite
    numbers within years 1970 +- 9999 pass, so no later arithmetic on them can overflow."""
    for claim in NUMERIC_DATE_CLAIMS:
        if claim not in claims:
            continue
        value = claims[claim]
        # abs() first: isfinite() of a huge int raises OverflowError; NaN fails the <=
        if type(value) not in (int, float) or not abs(value) <= LAST_NUMERIC_DATE:
            raise InvalidToken(f"claim {claim!r} is not a NumericDate")
    return claims


def _decode(token: str, key, **kwargs) -> dict:
    """`jwt.decode(token, key, **kwargs)` with NumericDates checked; raises InvalidToken."""
    try:
        claims = jwt.decode(token, key, leeway=LEEWAY_SECONDS, **kwargs)
    except (jwt.PyJWTError, OverflowError, ValueError, TypeError) as error:
        raise InvalidToken(str(error)) from None
    return check_numeric_dates(claims)


def caller_from_claims(claims: dict) -> Caller:
    """The Caller named by verified `claims`: id from `sub`, else `user_id`, `userId`, `id`.

    Raises InvalidToken when the first of those present is not a usable non-empty string, or
    none is present. Unusable `email` or `name` claims are dropped, not fatal.
    """
    for claim in USER_ID_CLAIMS:
        if claim in claims:
            user_id = _clean(claims[claim])
            if user_id is None:
                raise InvalidToken(f"claim {claim!r} is not a usable user id")
            issued_at = claims.get("iat")  # a NumericDate or absent: check_numeric_dates
            return Caller(
                user_id, _clean(claims.get("email")), _clean(claims.get("name")), issued_at
            )
    raise InvalidToken("token names no user (sub, user_id, userId or id)")


class SecretVerifier:
    """HS256 tokens signed with the shared `BETTER_AUTH_SECRET` (HS256 only, `exp` required).

    `iss` and `aud` are not checked: apps that sign their own tokens set them freely.
    """

    algorithms = ("HS256",)

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def claims(self, token: str) -> dict:
        """Verified claims of `token`; raises InvalidToken."""
        return _decode(
            token,
            self._key,
            algorithms=list(self.algorithms),
            options={"require": ["exp"], "verify_aud": False},
        )


class JWKSVerifier:
    """Asymmetric tokens of Better Auth's `jwt` plugin, checked against its JWKS.

    The algorithm is the key's own (the JWK's `alg`, else implied by its type and curve), never
    the token header's; `exp`, `iss` and `aud` are required and `iss`/`aud` must match:
    `issuer` and `audience` are one accepted value or several (PyJWT's `jwt.decode`).
    """

    algorithms = ("EdDSA", "ES256", "ES512", "RS256", "PS256")

    def __init__(self, keys, issuer: str | Container[str], audience: str | Iterable[str]) -> None:
        self._keys = keys  # middleware.jwks.JWKSKeys: async key(kid) -> PyJWK
        self._issuer = issuer
        self._audience = audience

    async def claims(self, token: str, header: dict) -> dict:
        """Verified claims of `token`; raises InvalidToken or KeysUnavailable."""
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("asymmetric token without a kid")
        key = await self._keys.key(kid)
        if key.algorithm_name not in self.algorithms:
            raise InvalidToken(f"key {kid!r} has an unaccepted algorithm")
        return _decode(
            token,
            key.key,
            algorithms=[key.algorithm_name],
            issuer=self._issuer,
            audience=self._audience,
            options={"require": ["exp", "iss", "aud"]},
        )


def make_verifier(secret: SecretVerifier | None, jwks: JWKSVerifier | None) -> Verifier:
    """The verifier over the configured key sources. The header's `alg` only routes the token:
    HS256 goes to the secret alone, the asymmetric algorithms to the JWKS alone, anything else
    (`none`, HS512, ...) is invalid (RFC 8725 section 3.1).

    A token that verified is remembered (the VERIFIED_MAX most recently used tokens) until its
    `exp` plus the leeway, but never longer than VERIFIED_SECONDS, so a frontend's repeated
    bearer token costs one check, not one per request. Rejected tokens are never remembered.
    """

    def remembered_until(token: str, entry: tuple[Caller, float], now: float) -> float:
        return min(entry[1], now + VERIFIED_SECONDS)

    # token -> (caller, exp + leeway). Not thread-safe, and needs not be: only the event loop
    # uses it (verify is a coroutine).
    verified = TLRUCache(VERIFIED_MAX, ttu=remembered_until, timer=time.time)

    async def claims(token: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error)) from None
        algorithm = header.get("alg")
        if secret is not None and algorithm in SecretVerifier.algorithms:
            return secret.claims(token)
        if jwks is not None and algorithm in JWKSVerifier.algorithms:
            return await jwks.claims(token, header)
        raise InvalidToken(f"algorithm {algorithm!r} is not accepted")

    async def verify(token: str) -> Caller:
        remembered = verified.get(token)
        if remembered is not None:
            return remembered[0]
        checked = await claims(token)
        caller = caller_from_claims(checked)
        verified[token] = (caller, float(checked["exp"]) + LEEWAY_SECONDS)
        return caller

    return verify
