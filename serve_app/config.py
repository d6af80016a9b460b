"""Typed configuration: the one place every option is declared and validated.

``configs/serve.yaml`` passes ``args`` to :func:`serve_app.app.build_app`, which
validates them as :class:`AppConfig`; a bad option fails at start with pydantic's
message, which names the field. Each section also carries ``deployment_config``:
Ray Serve's own deployment options (replicas, autoscaling, resources), checked
by Serve's schema when the app is built.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

MiB = 1024 * 1024


class BaseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def updated(self, changes: dict[str, Any]) -> BaseConfig:
        """A validated copy with ``changes`` applied (``user_config`` updates)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def overridden(self, overrides: dict[str, Any]) -> BaseConfig:
        """A validated copy with ``overrides`` merged in depth (tests, benchmarks, overlays)."""
        return type(self).model_validate(_merged(self.model_dump(mode="json"), overrides))


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if nested else value
    return out


JWTAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"
]


class AuthConfig(BaseConfig):
    """JWT authentication of `/v1/stream` and `/v1/ocr`. Secrets are never in the config itself."""

    enabled: bool = Field(False, description="Require a valid JWT (off: every client is tenant `anonymous`).")
    algorithms: list[JWTAlgorithm] = Field(
        default_factory=lambda: ["HS256"],
        min_length=1,
        description="Accepted `alg` values; anything else (including `none`) is refused.",
    )
    secret_env: str | None = Field(
        None, min_length=1, description="Env var holding the HS* shared secret (>= 32 bytes)."
    )
    secret_file: Path | None = Field(None, description="File holding the HS* secret (used if env unset).")
    jwks_file: Path | None = Field(None, description="JWKS file with the RS*/PS*/ES* public keys (by `kid`).")
    issuer: str | None = Field(None, min_length=1, description="Required `iss`, if set.")
    audience: str | None = Field(None, min_length=1, description="Required `aud` (needed when enabled).")
    leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat.")
    tenant_claim: str = Field("tenant", min_length=1, description="Claim naming the tenant (fallback `sub`).")
    limits_claim: str = Field(
        "limits", min_length=1, description="Claim with per-tenant limits; they may only lower the config."
    )
    max_token_bytes: int = Field(8192, ge=256, le=65536, description="Longer tokens are refused unread.")

    @model_validator(mode="after")
    def _keys_configured(self) -> AuthConfig:
        if not self.enabled:
            return self
        if any(a.startswith("HS") for a in self.algorithms) and not (self.secret_env or self.secret_file):
            raise ValueError("auth.secret_env or auth.secret_file is required for HS* algorithms")
        if any(not a.startswith("HS") for a in self.algorithms) and self.jwks_file is None:
            raise ValueError("auth.jwks_file is required for RS*/PS*/ES* algorithms")
        if self.audience is None:
            raise ValueError("auth.audience is required when auth.enabled is true")
        return self


class LimitsConfig(BaseConfig):
    """Token buckets per connection (and optionally per tenant, per ingress replica)."""

    frames_per_s: float = Field(60.0, gt=0, le=10_000, description="Frames/s of one connection.")
    frames_burst: float = Field(60.0, ge=1, description="Frames a connection may send at once.")
    bytes_per_s: float = Field(32 * MiB, gt=0, description="Message bytes/s of one connection.")
    bytes_burst: float = Field(64 * MiB, ge=1, description="Bytes a connection may send at once.")
    tenant_frames_per_s: float | None = Field(
        None, gt=0, description="Frames/s of all connections of a tenant (None: no tenant bucket)."
    )
    tenant_bytes_per_s: float | None = Field(
        None, gt=0, description="Bytes/s of all connections of a tenant (None: no tenant bucket)."
    )
    max_connections_per_tenant: int = Field(
        100, ge=1, description="Concurrent connections of one tenant (per ingress replica)."
    )
    violations_before_close: int = Field(
        50, ge=1, description="`rate_limited` frames within violation_window_s that close with 1008."
    )
    violation_window_s: float = Field(10.0, gt=0, description="Window of violations_before_close.")
    idle_timeout_s: float = Field(
        120.0, gt=0, description="A connection without any message this long is closed (by the ingress)."
    )


class SecurityConfig(BaseConfig):
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    ip_allowlist: list[IPv4Network | IPv6Network] = Field(
        default_factory=list, description="Client CIDRs allowed (empty: all)."
    )
    trusted_proxies: list[IPv4Network | IPv6Network] = Field(
        default_factory=list, description="Peers whose X-Forwarded-For is believed."
    )
    origin_allowlist: list[str] = Field(
        default_factory=list,
        description="Browser Origins allowed, e.g. `https://app.example.com` (empty: all; absent: ok).",
    )

    @model_validator(mode="after")
    def _origins_well_formed(self) -> SecurityConfig:
        for origin in self.origin_allowlist:
            if "://" not in origin or origin.rstrip("/") != origin or origin == "*":
                raise ValueError(f"origin_allowlist: {origin!r} must be scheme://host[:port], no slash")
        return self


class IngressConfig(BaseConfig):
    max_message_bytes: int = Field(
        8 * MiB, gt=0, description="A frame message above this is answered `too_large`."
    )
    hard_max_message_bytes: int = Field(
        16 * MiB, gt=0, description="A message above this closes the connection with 1009."
    )
    max_pixels: int = Field(
        40_000_000,
        gt=0,
        description="Width x height read from the image header; above it `too_large`, never decoded.",
    )
    max_held_bytes: int = Field(
        512 * MiB,
        gt=0,
        description="Image bytes one ingress replica holds for unanswered frames, all connections "
        "together; a frame beyond it is answered `overloaded` at once (memory bound).",
    )
    frame_deadline_s: float = Field(
        10.0, gt=0, description="No frame waits longer than this for its answer (`overloaded` then)."
    )
    compare_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker threads of an ingress replica that decode and compare frames (change "
        "detection). Frames wait for them newest-wins, so this bounds the CPU dedup takes; more "
        "threads use more cores but take the event loop's share of the GIL.",
    )
    shed_lag_s: float = Field(
        0.05,
        gt=0,
        description="While the replica's event loop lags more than this, a growing share of new frames "
        "is answered `overloaded` at once, without a sampler call (edge shedding).",
    )
    freeze_gc: bool = Field(
        True,
        description="Freeze what survives each full garbage collection of the replica, so the next one "
        "walks only newer objects: at thousands of connections a full collection otherwise stops the "
        "event loop for most of a second (serve_app/gc_freeze.py).",
    )
    ready_timeout_s: float = Field(2.0, gt=0, description="How long /healthz waits for the OCR replicas.")
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    deployment_config: dict[str, Any] = Field(default_factory=dict, description="Ray Serve options.")

    @model_validator(mode="after")
    def _limits_ordered(self) -> IngressConfig:
        if self.hard_max_message_bytes < self.max_message_bytes:
            raise ValueError("hard_max_message_bytes must be >= max_message_bytes")
        return self


class DedupConfig(BaseConfig):
    """Content-change detection of the sampler (``serve_app.dedup``, tuning in docs/dedup.md).

    Lengths are in pixels of the grey image (``width`` wide), not of the frame as sent.
    """

    enabled: bool = Field(
        True, description="Answer frames showing the same content as the frame last read `duplicate`."
    )
    width: int = Field(
        320,
        ge=64,
        le=1280,
        description="Width of the grey image compared (of the roi, if one is set); the smallest text "
        "that must be told apart should be >= 10 px high in it (24 px text in a 640 px frame: 12 px at 320).",
    )
    contrast_sigma: float = Field(
        2.0, gt=0, le=16, description="Scale of the local contrast normalisation (about a stroke width)."
    )
    contrast_floor: float = Field(
        8.0, gt=0, le=128, description="Lowest local contrast (grey levels) divided by: damps flat noise."
    )
    search: float = Field(
        12.0,
        gt=0,
        le=64,
        description="How far a piece of a text region may move between the reference and the frame; "
        "a piece that moved further is not trusted (a region left with none is a change).",
    )
    pyramid: int = Field(
        2, ge=0, le=5, description="Pyramid levels of the tracking (each doubles the motion it can follow)."
    )
    chunk: int = Field(
        32, ge=8, le=256, description="Width of the pieces a text region is matched by (2-3 characters)."
    )
    max_pieces: int = Field(6, ge=1, le=32, description="Most pieces one text region is cut into.")
    padding: int = Field(3, ge=0, le=32, description="Pixels added around each text box (strokes it cuts).")
    candidates: int = Field(
        3,
        ge=0,
        le=16,
        description="A region that does not match as tracked is also tried moved as its nearest other "
        "regions moved (a mis-tracked line on a card whose other lines were tracked).",
    )
    max_regions: int = Field(
        12, ge=1, le=256, description="Most text-like regions compared when no text boxes are known."
    )
    smooth: float = Field(
        0.8,
        ge=0,
        le=4,
        description="Gaussian sigma both images are smoothed by before they are compared (0: off): "
        "forgives focus, motion blur and JPEG differences finer than a character's strokes.",
    )
    subpixel_tolerance: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Misalignment left after registration that is forgiven, as a fraction of a pixel.",
    )
    pixel_threshold: float = Field(
        0.5,
        ge=0,
        le=8,
        description="Residual (in units of local contrast) a pixel must exceed to count as changed.",
    )
    block: int = Field(
        8, ge=2, le=64, description="Side of the square (about one character) whose residual is scored."
    )
    threshold: float = Field(
        0.001,
        gt=0,
        description="Text regions: the change score above which a frame is a change, the mean excess "
        "residual of the most changed block.",
    )
    margin: int = Field(3, ge=0, le=32, description="Border pixels ignored (content entering the view).")
    cell: int = Field(4, ge=1, le=32, description="Rest of the view: side of the cells texture is summed in.")
    reach: int = Field(
        2, ge=1, le=8, description="Rest of the view: cells texture may move by and still be the same."
    )
    scene_block: tuple[int, int] = Field(
        (4, 2), description="Rest of the view: (width, height) in cells of the smallest change that counts."
    )
    scene_threshold: float = Field(
        0.5,
        gt=0,
        description="Rest of the view: mean texture appeared or gone (units of local contrast) over "
        "`scene_block` above which a frame is a change.",
    )


class SamplerConfig(BaseConfig):
    """The sampler stage: each stream's sampling (rate, dedup, text events), which runs in the
    ingress replica that holds the stream, and fair admission to the model (``FrameSampler``).
    """

    default_fps: float = Field(
        5.0, gt=0, description="Steady read rate of a stream that asks for none (reads per second)."
    )
    max_fps: float = Field(30.0, gt=0, description="The highest target rate a stream may ask for.")
    burst: float = Field(
        2.0,
        ge=1,
        description="Reads a stream may make at once after a quiet spell (token bucket depth): a "
        "change is read on the frame that shows it; only steady change is held to the rate.",
    )
    compare_fps: float = Field(
        15.0,
        gt=0,
        description="Frames of a stream compared with the last read per second at most; the frames "
        "in between are answered `rate` undecoded (a change is noticed within 1/compare_fps).",
    )
    uncompared_after: int = Field(
        3,
        ge=0,
        description="A stream whose last this many compares all found a change, while the model reads "
        "a frame in less time than the stream's compare takes (a batching GPU, not the CPU model), "
        "reads its next `uncompared_reads` frames without comparing them: the compares of a stream "
        "whose every frame is new would save no read and starve a fast model. 0: always compare.",
    )
    uncompared_reads: int = Field(
        8,
        ge=1,
        description="Frames read uncompared (see `uncompared_after`) before the stream is compared "
        "again; each run that the next compare finds was needed (the frame changed again) is "
        "followed by one twice as long, up to `max_uncompared_reads`.",
    )
    max_uncompared_reads: int = Field(
        64,
        ge=1,
        description="The longest run of frames read uncompared: a stream that turns still is read at "
        "most this many times more (64 frames at ~1.6 ms each on a batching GPU).",
    )
    max_rate_wait_s: float = Field(
        0.5,
        gt=0,
        description="A changed frame waits at most this long for the stream's next read token (newer "
        "frames replace it meanwhile); when the wait would be longer it is answered `rate` at once.",
    )
    settle_s: float = Field(
        0.0,
        ge=0,
        description="Above 0: while the view keeps changing (each compared frame unlike the one before "
        "it: a card sliding in, a page turning), a stream reads at most once per settle_s; the first "
        "frame of a change is read at once, and so is the frame the view settles on. Fewer reads, "
        "a change read a few frames later (docs/dedup.md). 0: changed frames are read at the rate.",
    )
    min_reads_in_flight: int = Field(
        1, ge=1, description="Reads one sampler replica keeps at the model at least (admission window floor)."
    )
    max_reads_in_flight: int = Field(
        32,
        ge=1,
        description="Cap of the admission window. Within [min, max] the window adapts: it grows while "
        "reads start at once and shrinks when they queue at the model for longer than a batch takes.",
    )
    stream_idle_timeout_s: float = Field(
        60.0, gt=0, description="A stream's fair-share turn is forgotten after this long without reads."
    )
    refresh_s: float = Field(
        5.0, gt=0, description="A frame that looks unchanged is read anyway this long after the last read."
    )
    line_reads: bool = Field(
        True,
        description="A frame whose text changed only inside lines the last read found (nothing new "
        "elsewhere, no line grown out of its box) is read line by line: only the changed lines are "
        "recognised again, no detection (~40 ms a line on one CPU thread against ~270 ms for a "
        "label frame, docs/dedup.md). Refresh and confirmation reads are always whole.",
    )
    admission_timeout_s: float = Field(
        0.4,
        gt=0,
        description="A frame waiting this long for a free read slot is answered `overloaded`: its stream "
        "keeps its turn and a newer frame is read instead of one grown stale (about 1.5 CPU reads).",
    )
    read_timeout_s: float = Field(10.0, gt=0, description="A model call that takes longer fails `internal`.")
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    events: EventsConfig = Field(default_factory=lambda: EventsConfig())
    deployment_config: dict[str, Any] = Field(default_factory=dict, description="Ray Serve options.")

    @model_validator(mode="after")
    def _ordered(self) -> SamplerConfig:
        if self.default_fps > self.max_fps:
            raise ValueError("default_fps must be <= max_fps")
        if self.min_reads_in_flight > self.max_reads_in_flight:
            raise ValueError("min_reads_in_flight must be <= max_reads_in_flight")
        if self.uncompared_reads > self.max_uncompared_reads:
            raise ValueError("uncompared_reads must be <= max_uncompared_reads")
        return self


class EventsConfig(BaseConfig):
    """Text events of a stream (``serve_app.tracking``; defaults and their reasons in docs/events.md).

    Times are stream time (the frames' ``ts``); lengths are in line heights (the box height).
    """

    min_score: float = Field(
        0.5, ge=0, le=1, description="Lines scored below this (and empty lines) are not tracked."
    )
    confirm_reads: int = Field(
        2, ge=1, le=10, description="Consecutive reads of a place that must agree on a new text to report it."
    )
    min_span_s: float = Field(
        0.15,
        ge=0,
        le=5,
        description="The agreeing reads must span at least this much stream time: a misread that lasts "
        "fewer frames (blur, a hand) is never confirmed, even when read twice.",
    )
    max_forced_reads: int = Field(
        3,
        ge=0,
        le=10,
        description="Forced reads that bring no agreement before the tracker stops asking for them, "
        "until the next read that was not forced.",
    )
    gone_after_s: float = Field(
        1.0, gt=0, description="A confirmed line not seen for this long is reported `gone`."
    )
    place_tolerance: float = Field(
        1.0,
        gt=0,
        description="How far (line heights, after the estimated motion of the view) a line may lie from "
        "its track's last place and still be read as that track, whatever its text.",
    )
    max_jump: float = Field(
        4.0,
        gt=0,
        description="How far (line heights) a line with exactly its track's text may have moved and "
        "keep the track (lines swapping places, objects moving fast).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> EventsConfig:
        if self.max_jump < self.place_tolerance:
            raise ValueError("max_jump must be >= place_tolerance")
        return self


class OCRConfig(BaseConfig):
    engine: Literal["onnxruntime", "paddle_static"] = Field(
        "onnxruntime", description="PaddleOCR inference engine (see docs/engines.md)."
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="`auto`: the GPU Ray assigned this replica if the engine has CUDA, else CPU."
    )
    det_model_dir: Path | None = Field(
        None, description="Text detection model dir; default: PP-OCRv4 mobile shipped by pip packages."
    )
    det_model_name: str = Field("PP-OCRv4_mobile_det", description="Must match the dir's Global.model_name.")
    rec_model_dir: Path | None = Field(None, description="Text recognition model dir (default as above).")
    rec_model_name: str = Field("PP-OCRv4_mobile_rec", description="Must match the dir's Global.model_name.")
    use_textline_orientation: bool = Field(
        False, description="Run the text line orientation model (off: it flips upright Chinese lines)."
    )
    det_unclip_ratio: float = Field(
        2.5, gt=0, description="Box growth; 1.5 glues English words, 2.5 keeps the spaces (docs/engines.md)."
    )
    det_limit_side_len: int = Field(
        64, ge=16, description="Detection scales the short side up to at least this (small crops read)."
    )
    rec_score_thresh: float = Field(0.5, ge=0, le=1, description="Lines scored below this are dropped.")
    cpu_threads: int = Field(2, ge=1, description="Threads of the CPU engine.")
    max_batch_size: int = Field(1, ge=1, le=64, description="Frames read in one model call.")
    batch_wait_timeout_s: float = Field(
        0.005,
        ge=0,
        description="How long a batch that is not full waits for more frames once the model is free "
        "(the frames that came while it was busy are in it already).",
    )
    deployment_config: dict[str, Any] = Field(default_factory=dict, description="Ray Serve options.")


class AppConfig(BaseConfig):
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    ocr: OCRConfig = Field(default_factory=OCRConfig)

    @classmethod
    def from_file(cls, path: str | Path, app_name: str | None = None) -> AppConfig:
        """The ``args`` of an application in a Serve config file."""
        doc = yaml.safe_load(Path(path).read_text())
        apps = doc["applications"]
        app = next(a for a in apps if app_name is None or a.get("name") == app_name)
        return cls.model_validate(app.get("args") or {})
