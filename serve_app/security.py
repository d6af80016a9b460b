"""Security of the ingress, Ray-free: JWT authentication, IP/Origin allowlists, rate and connection limits.

:class:`Authenticator` runs on the handshake (and on ``POST /v1/ocr``) and gives a :class:`Principal` or
raises :class:`AuthError` (401/403); :class:`ConnectionLimiter` counts a tenant's connections (429) and
hands each one a :class:`ConnectionQuota` that judges every frame (:class:`QuotaDecision`). Nothing here
logs; no message carries token or secret content.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt

from serve_app.config import AuthConfig, LimitsConfig, SecurityConfig

ANONYMOUS_TENANT = "anonymous"
MIN_SECRET_BYTES = 32
Clock = Callable[[], float]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AuthError(Exception):
    """A refused request: ``status`` 401 (authentication), 403 (not allowed) or 429 (too many connections).

    ``reason`` is safe to log and to send to the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"AuthError({self.status}, {self.reason!r})"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}


@dataclass(frozen=True, slots=True)
class TenantLimits:
    frames_per_s: float
    frames_burst: float
    bytes_per_s: float
    bytes_burst: float
    max_connections: int

    @classmethod
    def from_config(cls, cfg: LimitsConfig) -> TenantLimits:
        c = cfg
        return cls(c.frames_per_s, c.frames_burst, c.bytes_per_s, c.bytes_burst, c.max_connections_per_tenant)

    def lowered(self, claim: Any) -> TenantLimits:
        """Lowered by a token's limits claim (``fps``, ``bytes_per_s``, ``max_connections``); never raised."""
        if not isinstance(claim, dict):
            raise AuthError(403, "the token's limits claim must be an object")
        values: dict[str, float] = {}
        for key in ("fps", "bytes_per_s", "max_connections"):
            value = claim.get(key)
            if value is None:
                continue
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value <= 0 or (key == "max_connections" and not isinstance(value, int)):
                raise AuthError(403, f"the token's limits.{key} must be a positive number")
            values[key] = value
        fps = min(self.frames_per_s, values.get("fps", math.inf))
        bps = min(self.bytes_per_s, values.get("bytes_per_s", math.inf))
        return TenantLimits(
            frames_per_s=fps,
            frames_burst=max(1.0, self.frames_burst * fps / self.frames_per_s),
            bytes_per_s=bps,
            bytes_burst=max(1.0, self.bytes_burst * bps / self.bytes_per_s),
            max_connections=int(min(self.max_connections, values.get("max_connections", math.inf))),
        )


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    limits: TenantLimits
    authenticated: bool = False
    client_ip: str | None = None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    getlist = getattr(headers, "getlist", None)  # Starlette's Headers: repeated headers joined
    if callable(getlist):
        values = getlist(name)
        return ", ".join(values) if values else None
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _parse_ip(text: str | None) -> IPAddress | None:
    text = (text or "").strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


class NetworkPolicy:
    """IP allowlist (X-Forwarded-For believed from trusted proxies only) and browser Origin allowlist."""

    def __init__(self, config: SecurityConfig) -> None:
        self._allow = list(config.ip_allowlist)
        self._proxies = list(config.trusted_proxies)
        self._origins = {o.lower() for o in config.origin_allowlist}

    @staticmethod
    def _within(ip: IPAddress, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
        return any(ip.version == net.version and ip in net for net in nets)

    def client_ip(self, headers: Mapping[str, str], client_host: str | None) -> IPAddress | None:
        """The client's address: the peer, or the right-most X-Forwarded-For hop not a trusted proxy."""
        ip = _parse_ip(client_host)
        forwarded = _header(headers, "x-forwarded-for")
        if ip is None or not forwarded or not self._within(ip, self._proxies):
            return ip
        for hop in reversed([h for h in forwarded.split(",") if h.strip()]):
            ip = _parse_ip(hop)
            if ip is None or not self._within(ip, self._proxies):
                return ip  # None: a garbled hop, the client is unknown
        return ip

    def check(self, headers: Mapping[str, str], client_host: str | None) -> str | None:
        """The client address (text) if allowed; raises ``AuthError(403)`` otherwise."""
        ip = self.client_ip(headers, client_host)
        if self._allow and (ip is None or not self._within(ip, self._allow)):
            raise AuthError(403, "client address not allowed")
        origin = _header(headers, "origin")
        if self._origins and origin is not None and origin.strip().rstrip("/").lower() not in self._origins:
            raise AuthError(403, "origin not allowed")
        return None if ip is None else str(ip)


def _load_secret(auth: AuthConfig, environ: Mapping[str, str]) -> bytes:
    if auth.secret_env and environ.get(auth.secret_env):
        secret, field = environ[auth.secret_env].encode(), "auth.secret_env"
    elif auth.secret_file is not None:
        secret, field = auth.secret_file.read_bytes().strip(), "auth.secret_file"
    else:
        raise ValueError(f"auth.secret_env: environment variable {auth.secret_env!r} is not set or empty")
    needed = max([MIN_SECRET_BYTES] + [int(a[2:]) // 8 for a in auth.algorithms if a.startswith("HS")])
    if len(secret) < needed:  # RFC 7518 3.2: at least the hash size (PyJWT would refuse every token)
        raise ValueError(f"{field}: the HS secret must be at least {needed} bytes for {auth.algorithms}")
    return secret


def _load_jwks(auth: AuthConfig) -> list[jwt.PyJWK]:
    assert auth.jwks_file is not None
    try:
        keys = json.loads(auth.jwks_file.read_text())["keys"]
        if any("d" in k for k in keys):
            raise ValueError("holds private key material; give public keys only")
        return [k for k in jwt.PyJWKSet(keys) if k.key_type != "oct"]
    except (ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
        raise ValueError(f"auth.jwks_file: not a usable public JWKS: {exc}") from None


class Authenticator:
    """Checks a handshake or request: network policy first (403), then the JWT (401)."""

    def __init__(self, config: SecurityConfig, environ: Mapping[str, str] | None = None) -> None:
        self._auth = config.auth
        self._limits = TenantLimits.from_config(config.limits)
        self.network = NetworkPolicy(config)
        algs = set(config.auth.algorithms) if config.auth.enabled else set()
        use_hs, use_pk = any(a.startswith("HS") for a in algs), any(not a.startswith("HS") for a in algs)
        env = os.environ if environ is None else environ
        self._secret = _load_secret(self._auth, env) if use_hs else None
        self._jwks = _load_jwks(self._auth) if use_pk else []

    @property
    def enabled(self) -> bool:
        return self._auth.enabled

    def authenticate(
        self, headers: Mapping[str, str], query: Mapping[str, str], client_host: str | None
    ) -> Principal:
        client_ip = self.network.check(headers, client_host)
        if not self._auth.enabled:
            return Principal(ANONYMOUS_TENANT, self._limits, authenticated=False, client_ip=client_ip)
        claims = self._decode(self._token(headers, query))
        tenant = claims.get(self._auth.tenant_claim, claims.get("sub"))
        if not isinstance(tenant, str) or not 0 < len(tenant) <= 256:
            raise AuthError(403, f"the token has no {self._auth.tenant_claim!r} or 'sub' claim")
        limits = self._limits
        if self._auth.limits_claim in claims:
            limits = limits.lowered(claims[self._auth.limits_claim])
        return Principal(tenant, limits, authenticated=True, client_ip=client_ip)

    def _token(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
        authorization = _header(headers, "authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(401, "the Authorization header must be 'Bearer <token>'")
            token = token.strip()
        else:
            token = query.get("token") or ""
        if not token:
            raise AuthError(401, "missing token")
        if len(token) > self._auth.max_token_bytes:
            raise AuthError(401, "token too long")
        return token

    def _key(self, header: dict[str, Any], alg: str) -> bytes | jwt.PyJWK:
        if alg.startswith("HS"):
            assert self._secret is not None
            return self._secret
        kid = header.get("kid")
        found = [k for k in self._jwks if k.key_id == kid] if kid is not None else self._jwks[:]
        if len(found) != 1:
            raise AuthError(401, "unknown signing key")
        return found[0]

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(401, "malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._auth.algorithms:
            raise AuthError(401, "token algorithm not allowed")
        required = ["exp"] + ["iss"] * bool(self._auth.issuer) + ["aud"] * bool(self._auth.audience)
        try:
            return jwt.decode(
                token,
                self._key(header, alg),
                algorithms=[alg],
                audience=self._auth.audience,
                issuer=self._auth.issuer,
                leeway=self._auth.leeway_s,
                options={"require": required, "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError(401, "token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, "token issuer not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(401, f"token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise AuthError(401, "invalid token") from None


class TokenBucket:
    """``rate`` tokens/s up to ``burst``. A take larger than ``burst`` passes on a full bucket (and leaves
    it in debt), so one big frame is never refused forever; the long-run rate still holds."""

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        if not (rate > 0 and burst > 0):
            raise ValueError("rate and burst must be > 0")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._stamp = burst, clock()

    def tokens(self, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._tokens

    def can_take(self, n: float = 1, now: float | None = None) -> bool:
        return self.tokens(now) >= min(n, self.burst)

    def take(self, n: float = 1) -> None:
        self._tokens -= n

    def try_take(self, n: float = 1, now: float | None = None) -> bool:
        if not self.can_take(n, now):
            return False
        self.take(n)
        return True


class QuotaDecision(StrEnum):
    OK = "ok"  # process the frame
    RATE_LIMITED = "rate_limited"  # answer the frame `error` / `rate_limited`
    CLOSE = "close"  # answer it `rate_limited`, then close the connection with 1008


class ConnectionQuota:
    """Frames/s and bytes/s of one connection (plus its tenant's shared buckets) and the violation count."""

    def __init__(
        self,
        frame_buckets: Sequence[TokenBucket],
        byte_buckets: Sequence[TokenBucket],
        violations_before_close: int,
        violation_window_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._frames, self._bytes = list(frame_buckets), list(byte_buckets)
        self._max_violations, self._window, self._clock = violations_before_close, violation_window_s, clock
        self._violations: deque[float] = deque()

    def check(self, nbytes: int, now: float | None = None) -> QuotaDecision:
        """Judge one frame of ``nbytes`` message bytes; takes tokens only when it passes."""
        now = self._clock() if now is None else now
        takes = [(b, 1) for b in self._frames] + [(b, nbytes) for b in self._bytes]
        if all(bucket.can_take(n, now) for bucket, n in takes):
            for bucket, n in takes:
                bucket.take(n)
            return QuotaDecision.OK
        self._violations.append(now)
        while self._violations[0] <= now - self._window:
            self._violations.popleft()
        too_many = len(self._violations) >= self._max_violations
        return QuotaDecision.CLOSE if too_many else QuotaDecision.RATE_LIMITED


class ConnectionLease:
    """One admitted connection; ``release()`` (or leaving the ``with``) frees the slot, once."""

    def __init__(self, limiter: ConnectionLimiter, principal: Principal, quota: ConnectionQuota) -> None:
        self.principal, self.quota, self._limiter, self._released = principal, quota, limiter, False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release(self.principal.tenant)

    def __enter__(self) -> ConnectionLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class ConnectionLimiter:
    """Open connections per tenant and the tenants' shared buckets, for one ingress replica."""

    def __init__(self, config: LimitsConfig, clock: Clock = time.monotonic) -> None:
        self._config, self._clock = config, clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._shared: dict[str, tuple[list[TokenBucket], list[TokenBucket]]] = {}

    def active(self, tenant: str) -> int:
        return self._counts.get(tenant, 0)

    def acquire(self, principal: Principal) -> ConnectionLease:
        """Admit a connection of ``principal`` or raise ``AuthError(429)``."""
        cfg, lim, tenant = self._config, principal.limits, principal.tenant
        with self._lock:
            if self._counts.get(tenant, 0) >= lim.max_connections:
                raise AuthError(429, "too many connections for this tenant")
            self._counts[tenant] = self._counts.get(tenant, 0) + 1
            if tenant not in self._shared:
                self._shared[tenant] = (
                    [TokenBucket(r, cfg.frames_burst, self._clock) for r in [cfg.tenant_frames_per_s] if r],
                    [TokenBucket(r, cfg.bytes_burst, self._clock) for r in [cfg.tenant_bytes_per_s] if r],
                )
            shared_frames, shared_bytes = self._shared[tenant]
        quota = ConnectionQuota(
            [TokenBucket(lim.frames_per_s, lim.frames_burst, self._clock), *shared_frames],
            [TokenBucket(lim.bytes_per_s, lim.bytes_burst, self._clock), *shared_bytes],
            cfg.violations_before_close,
            cfg.violation_window_s,
            self._clock,
        )
        return ConnectionLease(self, principal, quota)

    def _release(self, tenant: str) -> None:
        with self._lock:
            left = self._counts.get(tenant, 0) - 1
            if left > 0:
                self._counts[tenant] = left
            else:
                self._counts.pop(tenant, None)
                self._shared.pop(tenant, None)
