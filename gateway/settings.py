"""The whole configuration as pydantic models: one YAML file, `GATEWAY_*` environment overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.fleet.dns_settings import DiscoverySettings

CONFIG_ENV = "GATEWAY_CONFIG"
EngineKind = Literal["vllm", "sglang", "tgi", "llamacpp", "openai"]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the field path."""


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(StrictModel):
    """Where the gateway listens and what it accepts."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: PositiveInt = 8 * 1024 * 1024
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Client side: slow or oversized requests never hold a connection for good.
    header_timeout_s: PositiveFloat = 10.0
    body_timeout_s: PositiveFloat = 30.0
    keepalive_timeout_s: PositiveFloat = 5.0
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 32 * 1024
    max_url_bytes: Annotated[int, Field(ge=256, le=1024 * 1024)] = 8 * 1024
    max_connections: PositiveInt = 4096
    max_concurrent_requests: PositiveInt = 2048
    max_json_depth: Annotated[int, Field(ge=4, le=512)] = 64
    max_messages: PositiveInt = 4096
    # Lifecycle: SIGTERM turns /readyz 503, keeps accepting for `drain_delay_s`, then lets
    # requests in flight finish for up to `drain_s` before ending the rest.
    drain_delay_s: Annotated[float, Field(ge=0)] = 5.0
    drain_s: Annotated[float, Field(ge=0)] = 30.0
    admin_key: SecretStr | None = None


class IndexSettings(StrictModel):
    """The cache-location index: embedded in memory, or shared by every replica through Redis.

    ``redis_url`` names one Redis (``redis://``, ``rediss://``, ``unix://``) or a Redis Cluster
    by seed nodes (``redis+cluster://host:port[,host:port...]``, ``rediss+cluster://``).
    """

    kind: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    key_prefix: Annotated[str, Field(pattern=r"^[^{}]*$")] = "pgw:"
    lookup_timeout_ms: PositiveFloat = 50.0
    record_timeout_ms: PositiveFloat = 200.0
    # Replicas sharing the Redis index exchange their own load per backend this often while
    # busy (0: off); see gateway/fleet/exchange.py.
    load_exchange_ms: Annotated[float, Field(ge=0.0)] = 20.0

    @model_validator(mode="after")
    def _redis_needs_url(self) -> IndexSettings:
        if self.kind == "redis" and not self.redis_url:
            raise ValueError("index.kind is 'redis' but index.redis_url is not set")
        url = self.redis_url
        if not url:
            return self
        from gateway.prefix.redis_cluster import is_cluster_url, parse_cluster_url

        if is_cluster_url(url):
            try:
                parse_cluster_url(url)
            except ValueError as exc:
                raise ValueError(f"index.redis_url: {exc}") from None
        elif not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "index.redis_url must start with redis://, rediss://, unix:// "
                "or (a Redis Cluster) redis+cluster://, rediss+cluster://"
            )
        return self


class HashingSettings(StrictModel):
    """How prompts are cut into prefix blocks."""

    block_bytes: Annotated[int, Field(ge=16, le=65536)] = 256
    max_blocks: Annotated[int, Field(ge=1, le=16384)] = 512
    bytes_per_token: Annotated[float, Field(gt=0.5, le=16.0)] = 4.0


class CalibrationSettings(StrictModel):
    """How the gateway learns each backend's numbers from what its engine reports."""

    learn: bool = True
    window: Annotated[int, Field(ge=4, le=4096)] = 64
    min_samples: Annotated[int, Field(ge=1, le=1024)] = 8
    cached_tokens_tolerance: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.15
    output_tokens: PositiveFloat = 256.0
    discover_kv_capacity: bool = True

    @model_validator(mode="after")
    def _window_holds_samples(self) -> CalibrationSettings:
        if self.min_samples > self.window:
            raise ValueError("calibration.min_samples must not exceed calibration.window")
        return self


class UpstreamSettings(StrictModel):
    """The pooled HTTP client that talks to backends, and how long each step may take.

    Per attempt, a stream's first event (after queueing and prefill) is due within
    `first_byte_timeout_s`; a whole answer, which engines send once it is generated, within
    `response_timeout_s`; all attempts together get `first_byte_budget_s`. Keep-alive
    expiry stays below the engines' own idle close (uvicorn: 5 s).
    """

    connect_timeout_s: PositiveFloat = 2.0
    first_byte_timeout_s: PositiveFloat = 60.0
    response_timeout_s: PositiveFloat = 300.0
    first_byte_budget_s: PositiveFloat = 300.0
    read_timeout_s: PositiveFloat = 60.0
    max_connections_per_backend: PositiveInt = 256
    keepalive_expiry_s: PositiveFloat = 4.0
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    max_response_bytes: PositiveInt = 64 * 1024 * 1024
    max_pending_event_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024


class BreakerSettings(StrictModel):
    """The per-backend circuit breaker fed by every attempt's outcome."""

    enabled: bool = True
    consecutive_failures: PositiveInt = 5
    failure_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    window_s: PositiveFloat = 30.0
    min_requests: PositiveInt = 20
    cooldown_s: PositiveFloat = 5.0


class HealthSettings(StrictModel):
    """How often backends are probed, and when they count as down or back."""

    interval_s: PositiveFloat = 2.0
    load_interval_s: PositiveFloat = 1.0
    timeout_s: PositiveFloat = 1.0
    failures_to_down: PositiveInt = 2
    successes_to_up: PositiveInt = 1


class TracingSettings(StrictModel):
    """OpenTelemetry traces over OTLP/HTTP (the `otel` extra); off: a client's `traceparent`
    is passed on to the backend as sent."""

    enabled: bool = False
    # The OTLP/HTTP traces URL (`.../v1/traces`); unset: the OTEL_EXPORTER_OTLP_* variables.
    otlp_endpoint: AnyHttpUrl | None = None
    otlp_headers: dict[str, str] = {}
    export_timeout_s: PositiveFloat = 10.0
    # New traces sampled; a client's sampled flag is followed either way.
    sample_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    service_name: Annotated[str, Field(min_length=1)] = "prefix-gateway"

    @model_validator(mode="after")
    def _sdk_installed(self) -> TracingSettings:
        if self.enabled:
            from gateway.tracing import sdk_missing

            missing = sdk_missing()
            if missing is not None:
                raise ValueError(missing)
        return self


PolicyName = Literal["profile", "round_robin", "least_loaded", "sglang_threshold"]
ScorerName = Literal["cost", "affinity", "load"]
FilterName = Literal["model", "health", "bounded_load"]


class ProfileSettings(StrictModel):
    """A routing profile: filters, then scorers (each in [0, 1]) times weights, then a picker."""

    filters: list[FilterName] = ["model", "health", "bounded_load"]
    scorers: dict[ScorerName, Annotated[float, Field(ge=0)]] = {"cost": 1.0, "load": 0.05}
    picker: Literal["max_score"] = "max_score"
    load_bound: Annotated[float, Field(ge=1.0)] = 1.0
    load_slack: Annotated[int, Field(ge=0)] = 0
    popular_shares: Annotated[float, Field(ge=0)] = 4.0
    miss_penalty: Annotated[float, Field(ge=0)] = 3.0
    objective: Literal["completion", "ttft"] = "completion"

    @model_validator(mode="after")
    def _some_weight(self) -> ProfileSettings:
        if not any(weight > 0 for weight in self.scorers.values()):
            raise ValueError("a profile needs at least one scorer with a positive weight")
        return self


class ThresholdSettings(StrictModel):
    """The SGLang-style baseline: balance when load is skewed, else follow the best match."""

    balance_abs_threshold: Annotated[int, Field(ge=0)] = 64
    balance_rel_threshold: Annotated[float, Field(ge=1.0)] = 1.5
    cache_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3


class RoutingSettings(StrictModel):
    """Which routing policy decides; lanes and tiers join here."""

    policy: PolicyName = "profile"
    profile: str = "default"
    profiles: dict[str, ProfileSettings] = {"default": ProfileSettings()}
    threshold: ThresholdSettings = ThresholdSettings()
    explain: bool = False
    # Whether a client's `x-gateway-explain: 1` is honoured (it shows the fleet's topology).
    explain_header: bool = False

    @model_validator(mode="after")
    def _profile_exists(self) -> RoutingSettings:
        if self.profile not in self.profiles:
            raise ValueError(f"routing.profile {self.profile!r} is not in routing.profiles")
        return self


NonNegativeFloat = Annotated[float, Field(ge=0)]


class ModelPricing(StrictModel):
    """A model's prices in USD per million tokens; cache prices default to the input price."""

    input: NonNegativeFloat
    output: NonNegativeFloat
    cache_read: NonNegativeFloat | None = None
    cache_write: NonNegativeFloat | None = None


class TokenizerSettings(StrictModel):
    """A model's Hugging Face tokenizer (`tokenizer.json`, the `tokenizers` extra): exact
    prompt counts when the estimate is near a lane bound or a window."""

    file: Path
    # What the chat template adds per message (and once for the reply's header).
    per_message_tokens: Annotated[int, Field(ge=0, le=64)] = 4

    @field_validator("file")
    @classmethod
    def _loads(cls, file: Path) -> Path:
        from gateway.admission.tokens import load_tokenizer

        load_tokenizer(file)  # ValueError: missing package, unreadable or invalid file
        return file


class AccessLogSettings(StrictModel):
    """The JSON access log: one line per inference request on the `gateway.access` logger."""

    enabled: bool = True
    include_prompt: bool = False
    stream: Literal["stdout", "stderr"] = "stdout"
    # Lines are written together at most this long after the first of them (0: each at
    # once); a gateway that stops writes what it holds.
    flush_interval_s: Annotated[float, Field(ge=0.0, le=10.0)] = 0.1


TierName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
ServiceTier = Literal["auto", "default", "flex", "priority"]


class LaneSettings(StrictModel):
    """A context-length lane: requests whose estimated context is at most `up_to_tokens`
    (the last lane may leave it unset) go to `pools`, or to `spill` when those are full."""

    name: TierName
    up_to_tokens: PositiveInt | None = None
    pools: Annotated[list[str], Field(min_length=1)]
    spill: list[str] = []


class LimitSettings(StrictModel):
    """Per-tenant limits (unset: no limit)."""

    requests_per_min: PositiveInt | None = None
    tokens_per_min: PositiveInt | None = None
    max_concurrent: PositiveInt | None = None


class TierSettings(StrictModel):
    """A service tier: where its requests may go, how they queue, how long they may take.

    `rank` orders tiers in the admission queue (lower first); `engine_priority` is passed
    to engines that take one (vLLM's `priority`, lower is sooner).
    """

    pools: list[str] | None = None
    rank: Annotated[int, Field(ge=0, le=100)] = 1
    engine_priority: int | None = None
    first_byte_timeout_s: PositiveFloat | None = None
    max_queue_wait_s: Annotated[float, Field(ge=0)] = 10.0
    reject_status: Literal[429, 503] = 503
    limits: LimitSettings = LimitSettings()


def _default_tiers() -> dict[str, TierSettings]:
    return {"standard": TierSettings()}


class AdmissionSettings(StrictModel):
    """Tiers, lanes and the admission queue in front of routing."""

    default_output_tokens: PositiveInt = 256
    lanes: list[LaneSettings] = []
    tiers: dict[TierName, TierSettings] = Field(default_factory=_default_tiers)
    default_tier: TierName = "standard"
    # OpenAI's `service_tier` values and the tier each one asks for (`auto`: the key's own).
    service_tiers: dict[Literal["default", "flex", "priority"], TierName] = {}
    # Aging: a waiting request gains one rank per this many seconds, so none starves.
    aging_s: PositiveFloat = 5.0
    max_waiting: PositiveInt = 4096

    @model_validator(mode="after")
    def _names_exist(self) -> AdmissionSettings:
        tiers = set(self.tiers)
        for where, name in [("default_tier", self.default_tier)] + [
            (f"service_tiers.{k}", v) for k, v in self.service_tiers.items()
        ]:
            if name not in tiers:
                raise ValueError(f"admission.{where} {name!r} is not in admission.tiers")
        for lane in self.lanes[:-1]:
            if lane.up_to_tokens is None:
                raise ValueError(f"lane {lane.name!r}: only the last lane may omit up_to_tokens")
        bounds = [lane.up_to_tokens for lane in self.lanes if lane.up_to_tokens is not None]
        if bounds != sorted(set(bounds)):
            raise ValueError("admission.lanes must be in increasing up_to_tokens order")
        return self


class ApiKeySettings(StrictModel):
    """One client API key, by its SHA-256 (hex), with its tenant and tiers."""

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    tenant: TierName
    tier: TierName | None = None
    tiers: list[TierName] = []


class TenantSettings(StrictModel):
    """A tenant's own limits (over its tier's) and its weight among tenants of a tier."""

    limits: LimitSettings | None = None
    weight: PositiveFloat = 1.0


class AuthSettings(StrictModel):
    """Client API keys. Keys may also come from `keys_file` (a YAML list of key entries) or
    the environment variable named by `keys_env` (the same list as JSON)."""

    enabled: bool = False
    keys: list[ApiKeySettings] = []
    keys_file: Path | None = None
    keys_env: str | None = None
    default_tenant: TierName = "default"
    tenants: dict[TierName, TenantSettings] = {}


class BackendSettings(StrictModel):
    """One model server of the fleet."""

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    url: AnyHttpUrl
    engine: EngineKind = "vllm"
    models: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    pool: str = "default"
    accelerator: str = "unknown"
    max_context: PositiveInt | None = None
    prefill_tokens_per_s: PositiveFloat = 10_000.0
    decode_s_per_token: PositiveFloat = 0.02
    decode_batch_slope: Annotated[float, Field(ge=0.0)] = 0.01
    bytes_per_token: Annotated[float, Field(gt=0.5, le=16.0)] | None = None
    max_concurrency: PositiveInt | None = None  # else what the engine states, else 256
    kv_cache_tokens: PositiveInt = 1_000_000
    reports_cached_tokens: bool = False
    # The engine schedules by request priority (vLLM `--scheduling-policy priority`): only then
    # is a tier's `engine_priority` sent, as vLLM refuses a non-zero priority otherwise.
    priority_scheduling: bool = False
    api_key: SecretStr | None = None
    # https:// only: a CA bundle trusted besides the system's, and the name sent as SNI and
    # checked against the certificate (default: the URL's host).
    tls_ca_file: Path | None = None
    tls_server_name: (
        Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.-]+$")] | None
    ) = None

    @field_validator("url")
    @classmethod
    def _no_path_query(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.query or url.fragment:
            raise ValueError("backend url must not carry a query or fragment")
        if url.scheme not in ("http", "https"):
            raise ValueError("backend url must be http:// or https://")
        return url

    @field_validator("tls_ca_file", "tls_server_name")
    @classmethod
    def _tls_needs_https(cls, value: Any, info: ValidationInfo) -> Any:
        url = info.data.get("url")
        if value is not None and url is not None and url.scheme != "https":
            raise ValueError(f"{info.field_name} applies only to an https:// backend url")
        return value

    @property
    def base_url(self) -> str:
        """The URL without a trailing slash, ready to have `/v1/...` appended."""
        return str(self.url).rstrip("/")


class GatewaySettings(BaseSettings):
    """The gateway's configuration, validated at start."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    index: IndexSettings = IndexSettings()
    hashing: HashingSettings = HashingSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    breaker: BreakerSettings = BreakerSettings()
    health: HealthSettings = HealthSettings()
    calibration: CalibrationSettings = CalibrationSettings()
    routing: RoutingSettings = RoutingSettings()
    tracing: TracingSettings = TracingSettings()
    # Backends found through DNS (gateway/fleet/discovery.py); before `backends`, which reads it.
    discovery: DiscoverySettings = DiscoverySettings()
    admission: AdmissionSettings = AdmissionSettings()
    auth: AuthSettings = AuthSettings()
    # Model name (as the backends serve it) -> its prices; unpriced models cost nothing.
    pricing: dict[Annotated[str, Field(min_length=1)], ModelPricing] = {}
    # Model name -> its tokenizer file, for exact prompt counts near lane bounds and windows.
    tokenizers: dict[Annotated[str, Field(min_length=1)], TokenizerSettings] = {}
    access_log: AccessLogSettings = AccessLogSettings()
    backends: list[BackendSettings]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: it overrides what the file says.
        return (env_settings, init_settings)

    @field_validator("backends")
    @classmethod
    def _some_backend(cls, backends: list[BackendSettings], info: ValidationInfo) -> Any:
        discovery = info.data.get("discovery")
        if not backends and (discovery is None or not discovery.groups):
            raise ValueError("at least one backend is needed (or a discovery.groups entry)")
        return backends

    @model_validator(mode="after")
    def _unique_backend_ids(self) -> GatewaySettings:
        seen: set[str] = set()
        for backend in self.backends:
            if backend.id in seen:
                raise ValueError(f"backend id {backend.id!r} appears more than once")
            seen.add(backend.id)
        tiers = set(self.admission.tiers)
        for i, key in enumerate(self.auth.keys):
            for name in [key.tier, *key.tiers]:
                if name is not None and name not in tiers:
                    raise ValueError(f"auth.keys.{i}: tier {name!r} is not in admission.tiers")
        return self


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {path}: {item['msg']}")
    return "\n".join(lines)


def settings_from_mapping(data: Any, source: str = "configuration") -> GatewaySettings:
    """Validate an already-parsed config mapping (environment overrides still apply)."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: the top level must be a mapping")
    try:
        return GatewaySettings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_settings(path: str | Path) -> GatewaySettings:
    """Read, parse and validate a YAML config file; raise ConfigError naming the field path."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {file}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration {file} is not valid YAML: {exc}") from None
    return settings_from_mapping({} if data is None else data, str(file))
