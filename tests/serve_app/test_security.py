"""Unit tests of serve_app.security (no Ray): JWT auth, network policy, rate and connection limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from serve_app.config import LimitsConfig, SecurityConfig
from serve_app.security import (
    ANONYMOUS_TENANT,
    Authenticator,
    AuthError,
    ConnectionLimiter,
    ConnectionQuota,
    Principal,
    QuotaDecision,
    TenantLimits,
    TokenBucket,
)

SECRET = "test-secret-" + "0123456789abcdef" * 4
ENV = {"OCR_JWT_SECRET": SECRET}
AUD = "ocr"
ISS = "https://issuer.example"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- helpers ---------------------------------------------------------------------


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"tenant": "acme", "sub": "user-1", "aud": AUD, "iss": ISS, "iat": now, "exp": now + 300}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def hs_token(secret: str | bytes = SECRET, alg: str = "HS256", **over: Any) -> str:
    return jwt.encode(claims(**over), secret, algorithm=alg)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None = None) -> str:
    """A token built by hand (``alg: none``, HMAC over a public key): PyJWT refuses to make these."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = b"" if hmac_key is None else hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def security(auth: dict[str, Any] | None = None, **kw: Any) -> SecurityConfig:
    auth_cfg = {"enabled": True, "secret_env": "OCR_JWT_SECRET", "audience": AUD, "issuer": ISS}
    return SecurityConfig.model_validate({"auth": {**auth_cfg, **(auth or {})}, **kw})


def hs_auth(**auth: Any) -> Authenticator:
    return Authenticator(security(auth), environ=ENV)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def refused(auth: Authenticator, headers: dict[str, str], query: dict[str, str] | None = None) -> AuthError:
    with pytest.raises(AuthError) as info:
        auth.authenticate(headers, query or {}, "127.0.0.1")
    return info.value


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "rsa-1", "alg": "RS256"},
            {**RSAAlgorithm.to_jwk(other_rsa.public_key(), as_dict=True), "kid": "rsa-2", "alg": "RS256"},
            {**ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "ec-1", "alg": "ES256"},
        ]
    }
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps(jwks))
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {"rsa": rsa_key, "other_rsa": other_rsa, "ec": ec_key, "jwks_file": path, "rsa_pem": pem}


def pk_auth(keys: dict[str, Any], algorithms: list[str] | None = None) -> Authenticator:
    cfg = {"algorithms": algorithms or ["RS256", "ES256"], "secret_env": None, "jwks_file": keys["jwks_file"]}
    return Authenticator(security(cfg), environ=ENV)


# --- JWT: HS256 ------------------------------------------------------------------


def test_valid_hs256_token_from_env_gives_tenant() -> None:
    principal = hs_auth().authenticate(bearer(hs_token()), {}, "127.0.0.1")
    assert principal.tenant == "acme"
    assert principal.authenticated


def test_hs256_secret_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    auth = Authenticator(security({"secret_env": None, "secret_file": secret_file}), environ={})
    assert auth.authenticate(bearer(hs_token()), {}, None).tenant == "acme"


def test_token_from_query_parameter() -> None:
    assert hs_auth().authenticate({}, {"token": hs_token()}, None).tenant == "acme"


def test_header_token_is_preferred_over_query() -> None:
    principal = hs_auth().authenticate(bearer(hs_token()), {"token": "garbage"}, None)
    assert principal.tenant == "acme"


def test_authorization_header_name_is_case_insensitive() -> None:
    principal = hs_auth().authenticate({"Authorization": f"bearer {hs_token()}"}, {}, None)
    assert principal.tenant == "acme"


def test_missing_token_is_401() -> None:
    err = refused(hs_auth(), {})
    assert (err.status, err.reason) == (401, "missing token")
    assert err.headers == {"WWW-Authenticate": "Bearer"}


def test_non_bearer_scheme_is_401() -> None:
    assert refused(hs_auth(), {"authorization": "Basic dXNlcjpwYXNz"}).status == 401


def test_expired_token_is_401() -> None:
    err = refused(hs_auth(), bearer(hs_token(exp=int(time.time()) - 120)))
    assert (err.status, err.reason) == (401, "token expired")


def test_expired_within_leeway_is_accepted() -> None:
    auth = hs_auth(leeway_s=30)
    assert auth.authenticate(bearer(hs_token(exp=int(time.time()) - 5)), {}, None).tenant == "acme"


def test_not_yet_valid_token_is_401() -> None:
    err = refused(hs_auth(), bearer(hs_token(nbf=int(time.time()) + 600)))
    assert (err.status, err.reason) == (401, "token not yet valid")


def test_token_without_exp_is_401() -> None:
    err = refused(hs_auth(), bearer(hs_token(exp=None)))
    assert (err.status, err.reason) == (401, "token lacks the 'exp' claim")


def test_wrong_audience_is_401() -> None:
    err = refused(hs_auth(), bearer(hs_token(aud="billing")))
    assert (err.status, err.reason) == (401, "token audience not accepted")


def test_wrong_issuer_is_401() -> None:
    err = refused(hs_auth(), bearer(hs_token(iss="https://evil.example")))
    assert (err.status, err.reason) == (401, "token issuer not accepted")


def test_forged_token_with_wrong_secret_is_401() -> None:
    err = refused(hs_auth(), bearer(hs_token(secret="another-secret-of-enough-length-0123456789")))
    assert (err.status, err.reason) == (401, "invalid token")


def test_alg_none_is_refused() -> None:
    token = raw_token({"alg": "none", "typ": "JWT"}, claims())
    assert refused(hs_auth(), bearer(token)).status == 401


def test_unconfigured_hs_algorithm_is_refused() -> None:
    err = refused(hs_auth(), bearer(hs_token(alg="HS512")))
    assert (err.status, err.reason) == (401, "token algorithm not allowed")


def test_malformed_token_is_401() -> None:
    assert refused(hs_auth(), bearer("not.a.jwt")).reason == "malformed token"


def test_overlong_token_is_401() -> None:
    assert refused(hs_auth(), bearer("a" * 10_000)).reason == "token too long"


# --- JWT: RS256 / ES256 from a JWKS file ------------------------------------------


def test_rs256_token_verified_with_key_selected_by_kid(keys: dict[str, Any]) -> None:
    token = jwt.encode(claims(), keys["other_rsa"], algorithm="RS256", headers={"kid": "rsa-2"})
    assert pk_auth(keys).authenticate(bearer(token), {}, None).tenant == "acme"


def test_es256_token_from_jwks(keys: dict[str, Any]) -> None:
    token = jwt.encode(claims(), keys["ec"], algorithm="ES256", headers={"kid": "ec-1"})
    assert pk_auth(keys).authenticate(bearer(token), {}, None).tenant == "acme"


def test_rs256_token_signed_by_another_key_of_the_set_is_401(keys: dict[str, Any]) -> None:
    token = jwt.encode(claims(), keys["rsa"], algorithm="RS256", headers={"kid": "rsa-2"})
    assert refused(pk_auth(keys), bearer(token)).reason == "invalid token"


def test_unknown_kid_is_401(keys: dict[str, Any]) -> None:
    token = jwt.encode(claims(), keys["rsa"], algorithm="RS256", headers={"kid": "nope"})
    assert refused(pk_auth(keys), bearer(token)).reason == "unknown signing key"


def test_kid_of_a_key_of_another_algorithm_is_401(keys: dict[str, Any]) -> None:
    token = jwt.encode(claims(), keys["rsa"], algorithm="RS256", headers={"kid": "ec-1"})
    assert refused(pk_auth(keys), bearer(token)).status == 401


def test_hs256_signed_with_the_rsa_public_key_is_refused(keys: dict[str, Any]) -> None:
    token = raw_token({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(), hmac_key=keys["rsa_pem"])
    err = refused(pk_auth(keys), bearer(token))
    assert (err.status, err.reason) == (401, "token algorithm not allowed")


def test_hs256_with_rsa_public_key_is_refused_when_both_families_are_allowed(keys: dict[str, Any]) -> None:
    auth_cfg = {"algorithms": ["HS256", "RS256"], "jwks_file": keys["jwks_file"]}
    auth = Authenticator(security(auth_cfg), environ=ENV)
    token = raw_token({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(), hmac_key=keys["rsa_pem"])
    assert refused(auth, bearer(token)).reason == "invalid token"


# --- claims: tenant and limits -------------------------------------------------------


def test_tenant_falls_back_to_sub() -> None:
    assert hs_auth().authenticate(bearer(hs_token(tenant=None)), {}, None).tenant == "user-1"


def test_tenant_claim_name_is_configurable() -> None:
    token = hs_token(org="globex")
    assert hs_auth(tenant_claim="org").authenticate(bearer(token), {}, None).tenant == "globex"


def test_token_without_tenant_or_sub_is_403() -> None:
    assert refused(hs_auth(), bearer(hs_token(tenant=None, sub=None))).status == 403


def test_limits_claim_lowers_the_configured_limits() -> None:
    token = hs_token(limits={"fps": 5, "bytes_per_s": 1000, "max_connections": 2})
    limits = hs_auth().authenticate(bearer(token), {}, None).limits
    assert (limits.frames_per_s, limits.bytes_per_s, limits.max_connections) == (5, 1000, 2)


def test_limits_claim_cannot_raise_the_configured_limits() -> None:
    token = hs_token(limits={"fps": 10_000, "bytes_per_s": 1e12, "max_connections": 10_000})
    limits = hs_auth().authenticate(bearer(token), {}, None).limits
    assert limits == TenantLimits.from_config(LimitsConfig())


def test_malformed_limits_claim_is_403() -> None:
    assert refused(hs_auth(), bearer(hs_token(limits={"fps": "fast"}))).status == 403


def test_auth_disabled_gives_anonymous_and_ignores_tokens() -> None:
    auth = Authenticator(SecurityConfig(), environ={})
    principal = auth.authenticate(bearer("garbage"), {}, "127.0.0.1")
    assert (principal.tenant, principal.authenticated, auth.enabled) == (ANONYMOUS_TENANT, False, False)


# --- secrets never leak ------------------------------------------------------------------


@pytest.mark.parametrize(
    "over",
    [{"exp": 1}, {"aud": "billing"}, {"iss": "x"}, {"secret": "wrong-secret-of-enough-length-0123456789"}],
)
def test_token_and_secret_never_appear_in_auth_error(over: dict[str, Any]) -> None:
    token = hs_token(**over)
    err = refused(hs_auth(), bearer(token))
    for text in (str(err), repr(err), err.reason, repr(err.args)):
        assert token not in text and SECRET not in text
        assert token.split(".")[1] not in text
    assert err.__cause__ is None and err.__suppress_context__


def test_missing_env_secret_fails_at_start_without_naming_a_value() -> None:
    with pytest.raises(ValueError, match=r"auth\.secret_env"):
        Authenticator(security(), environ={})


def test_short_secret_fails_at_start() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Authenticator(security(), environ={"OCR_JWT_SECRET": "short"})


def test_secret_shorter_than_the_hs512_hash_fails_at_start() -> None:
    with pytest.raises(ValueError, match="at least 64 bytes"):
        Authenticator(security({"algorithms": ["HS512"]}), environ={"OCR_JWT_SECRET": "x" * 40})


def test_jwks_with_private_key_fails_at_start(tmp_path: Path) -> None:
    private = RSAAlgorithm.to_jwk(
        rsa.generate_private_key(public_exponent=65537, key_size=2048), as_dict=True
    )
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**private, "kid": "k"}]}))
    with pytest.raises(ValueError, match=r"auth\.jwks_file"):
        Authenticator(security({"algorithms": ["RS256"], "jwks_file": path}), environ=ENV)


# --- network policy -------------------------------------------------------------------------


def net(**kw: Any) -> Authenticator:
    return Authenticator(SecurityConfig.model_validate(kw), environ={})


def test_ipv4_allowlist_admits_an_address_inside() -> None:
    assert net(ip_allowlist=["10.0.0.0/8"]).authenticate({}, {}, "10.1.2.3").client_ip == "10.1.2.3"


def test_ipv4_allowlist_refuses_an_address_outside_with_403() -> None:
    with pytest.raises(AuthError) as info:
        net(ip_allowlist=["10.0.0.0/8"]).authenticate({}, {}, "192.168.1.1")
    assert info.value.status == 403


def test_ipv6_allowlist() -> None:
    auth = net(ip_allowlist=["2001:db8::/32"])
    assert auth.authenticate({}, {}, "2001:db8::1").client_ip == "2001:db8::1"
    with pytest.raises(AuthError):
        auth.authenticate({}, {}, "2001:db9::1")


def test_ipv4_mapped_ipv6_peer_matches_an_ipv4_network() -> None:
    assert net(ip_allowlist=["10.0.0.0/8"]).authenticate({}, {}, "::ffff:10.0.0.7").client_ip == "10.0.0.7"


def test_unknown_client_address_is_refused_when_an_allowlist_is_set() -> None:
    with pytest.raises(AuthError):
        net(ip_allowlist=["10.0.0.0/8"]).authenticate({}, {}, None)


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    auth = net(ip_allowlist=["10.0.0.0/8"])
    with pytest.raises(AuthError):
        auth.authenticate({"x-forwarded-for": "10.0.0.1"}, {}, "203.0.113.9")


def test_forwarded_for_is_honoured_from_a_trusted_proxy() -> None:
    auth = net(ip_allowlist=["198.51.100.0/24"], trusted_proxies=["10.0.0.0/8"])
    headers = {"X-Forwarded-For": "198.51.100.7, 10.0.0.3"}
    assert auth.authenticate(headers, {}, "10.0.0.2").client_ip == "198.51.100.7"


def test_spoofed_left_forwarded_for_hop_is_not_believed() -> None:
    auth = net(ip_allowlist=["198.51.100.0/24"], trusted_proxies=["10.0.0.0/8"])
    # The client sent "X-Forwarded-For: 198.51.100.7"; the proxy appended the real address.
    with pytest.raises(AuthError):
        auth.authenticate({"x-forwarded-for": "198.51.100.7, 203.0.113.9"}, {}, "10.0.0.2")


def test_trusted_ipv6_proxy_forwarding_an_ipv4_client() -> None:
    auth = net(ip_allowlist=["198.51.100.0/24"], trusted_proxies=["fd00::/8"])
    assert auth.authenticate({"x-forwarded-for": "198.51.100.7"}, {}, "fd00::2").client_ip == "198.51.100.7"


def test_garbled_forwarded_for_hop_is_refused_when_an_allowlist_is_set() -> None:
    auth = net(ip_allowlist=["0.0.0.0/0"], trusted_proxies=["10.0.0.0/8"])
    with pytest.raises(AuthError):
        auth.authenticate({"x-forwarded-for": "not-an-ip"}, {}, "10.0.0.2")


def test_allowed_origin_is_admitted() -> None:
    auth = net(origin_allowlist=["https://app.example.com"])
    assert auth.authenticate({"origin": "https://App.example.com"}, {}, None).tenant == ANONYMOUS_TENANT


def test_other_origin_is_refused_with_403() -> None:
    with pytest.raises(AuthError) as info:
        net(origin_allowlist=["https://app.example.com"]).authenticate(
            {"origin": "https://evil.com"}, {}, None
        )
    assert (info.value.status, info.value.reason) == (403, "origin not allowed")


def test_absent_origin_is_admitted() -> None:
    assert net(origin_allowlist=["https://app.example.com"]).authenticate({}, {}, None).tenant


def test_network_is_checked_before_the_token() -> None:
    auth = Authenticator(security(ip_allowlist=["10.0.0.0/8"]), environ=ENV)
    with pytest.raises(AuthError) as info:
        auth.authenticate({}, {}, "192.168.0.1")
    assert info.value.status == 403


# --- token bucket ---------------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=1, burst=3, clock=FakeClock())
    assert [bucket.try_take(now=1000.0) for _ in range(4)] == [True, True, True, False]


def test_token_bucket_refills_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=2, clock=clock)
    assert bucket.try_take(2)
    clock.now += 0.25
    assert not bucket.try_take()
    clock.now += 0.25
    assert bucket.try_take()


def test_token_bucket_never_holds_more_than_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    clock.now += 3600
    assert bucket.tokens() == 5


def test_token_bucket_passes_a_take_larger_than_the_burst_when_full_and_goes_into_debt() -> None:
    bucket = TokenBucket(rate=100, burst=100, clock=FakeClock())
    assert bucket.try_take(250, now=1000.0)
    assert not bucket.try_take(1, now=1001.0)  # -150 + 100 tokens
    assert bucket.try_take(1, now=1002.0)  # -150 + 200 tokens


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(1, 5)), max_size=60))
def test_token_bucket_never_lets_more_than_burst_plus_rate_times_elapsed(
    steps: list[tuple[float, int]],
) -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(rate=3, burst=5, clock=clock)
    taken = 0
    for dt, n in steps:
        clock.now += dt
        taken += n if bucket.try_take(n) else 0
    assert taken <= 5 + 3 * clock.now + 1e-9


# --- per-connection quota --------------------------------------------------------------------------


def quota(clock: FakeClock, fps: float = 2, bps: float = 1000, violations: int = 3) -> ConnectionQuota:
    return ConnectionQuota(
        [TokenBucket(fps, fps, clock)], [TokenBucket(bps, bps, clock)], violations, 10.0, clock
    )


def test_quota_rate_limits_frames_over_the_frame_rate() -> None:
    q = quota(FakeClock())
    assert [q.check(10) for _ in range(3)] == [QuotaDecision.OK, QuotaDecision.OK, QuotaDecision.RATE_LIMITED]


def test_quota_rate_limits_frames_over_the_byte_rate() -> None:
    q = quota(FakeClock(), fps=100)
    assert q.check(800) == QuotaDecision.OK
    assert q.check(800) == QuotaDecision.RATE_LIMITED


def test_refused_frame_takes_no_tokens() -> None:
    q = quota(FakeClock(), fps=100)
    assert q.check(800) == QuotaDecision.OK
    assert q.check(900) == QuotaDecision.RATE_LIMITED
    assert q.check(200) == QuotaDecision.OK


def test_repeated_violations_lead_to_close() -> None:
    q = quota(FakeClock(), fps=1, violations=3)
    decisions = [q.check(1) for _ in range(4)]
    assert decisions == [QuotaDecision.OK, QuotaDecision.RATE_LIMITED, QuotaDecision.RATE_LIMITED, "close"]


def test_violations_outside_the_window_are_forgotten() -> None:
    clock = FakeClock()
    q = quota(clock, fps=1, violations=2)
    assert q.check(1) == QuotaDecision.OK
    assert q.check(1) == QuotaDecision.RATE_LIMITED
    clock.now += 10.5
    assert q.check(1) == QuotaDecision.OK
    assert q.check(1) == QuotaDecision.RATE_LIMITED


# --- connections per tenant ----------------------------------------------------------------------------


def principal(tenant: str = "acme", max_connections: int = 2, **limits: Any) -> Principal:
    base = TenantLimits.from_config(LimitsConfig(max_connections_per_tenant=max_connections, **limits))
    return Principal(tenant, base, authenticated=True)


def test_connection_limit_reached_is_429() -> None:
    limiter = ConnectionLimiter(LimitsConfig())
    limiter.acquire(principal())
    limiter.acquire(principal())
    with pytest.raises(AuthError) as info:
        limiter.acquire(principal())
    assert info.value.status == 429


def test_released_connection_frees_its_slot() -> None:
    limiter = ConnectionLimiter(LimitsConfig())
    first = limiter.acquire(principal())
    limiter.acquire(principal())
    first.release()
    first.release()  # idempotent
    assert limiter.acquire(principal()).principal.tenant == "acme"
    assert limiter.active("acme") == 2


def test_lease_as_context_manager_releases_on_exit() -> None:
    limiter = ConnectionLimiter(LimitsConfig())
    with limiter.acquire(principal()) as lease:
        assert lease.quota.check(1) == QuotaDecision.OK
        assert limiter.active("acme") == 1
    assert limiter.active("acme") == 0


def test_connection_limit_is_per_tenant() -> None:
    limiter = ConnectionLimiter(LimitsConfig())
    limiter.acquire(principal("a", max_connections=1))
    assert limiter.acquire(principal("b", max_connections=1)).principal.tenant == "b"


def test_tenant_bucket_is_shared_by_the_tenants_connections() -> None:
    clock = FakeClock()
    limiter = ConnectionLimiter(LimitsConfig(tenant_frames_per_s=1, frames_burst=1), clock)
    first, second = limiter.acquire(principal()), limiter.acquire(principal())
    assert first.quota.check(1) == QuotaDecision.OK
    assert second.quota.check(1) == QuotaDecision.RATE_LIMITED


# --- config validation ----------------------------------------------------------------------------------


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        SecurityConfig.model_validate(data)
    return str(info.value)


def test_config_hs_without_secret_names_secret_env() -> None:
    assert "auth.secret_env" in config_error({"auth": {"enabled": True, "audience": AUD}})


def test_config_rs256_without_jwks_names_jwks_file() -> None:
    data = {"auth": {"enabled": True, "algorithms": ["RS256"], "audience": AUD}}
    assert "auth.jwks_file" in config_error(data)


def test_config_enabled_without_audience_names_audience() -> None:
    assert "auth.audience" in config_error({"auth": {"enabled": True, "secret_env": "X"}})


def test_config_refuses_alg_none() -> None:
    assert "algorithms" in config_error({"auth": {"algorithms": ["none"]}})


def test_config_bad_cidr_names_ip_allowlist() -> None:
    assert "ip_allowlist" in config_error({"ip_allowlist": ["10.0.0.0/33"]})


def test_config_negative_leeway_names_leeway_s() -> None:
    assert "leeway_s" in config_error({"auth": {"leeway_s": -1}})


def test_config_origin_with_path_names_origin_allowlist() -> None:
    assert "origin_allowlist" in config_error({"origin_allowlist": ["https://app.example.com/"]})


def test_config_unknown_field_is_refused() -> None:
    assert "secret" in config_error({"auth": {"secret": "inline-secrets-are-not-allowed"}})


def test_default_config_has_auth_off() -> None:
    assert SecurityConfig().auth.enabled is False
