"""Client API keys: stored as SHA-256 hashes, each naming a tenant and the tiers it may use."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
import yaml
from pydantic import TypeAdapter, ValidationError

from gateway.errors import GatewayError
from gateway.settings import ApiKeySettings, AuthSettings, ConfigError

_KEY_LIST = TypeAdapter(list[ApiKeySettings])


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key, as the `auth.keys[].sha256` entries hold it."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: the tenant, its default tier (None: the configured one) and the
    tiers it may ask for."""

    tenant: str
    tier: str | None
    tiers: frozenset[str]


def invalid_key(message: str) -> GatewayError:
    """OpenAI's 401 for a missing or unknown key."""
    return GatewayError(401, message, code="invalid_api_key")


class KeyTable:
    """Looks the bearer key of a request up by its hash."""

    def __init__(self, enabled: bool, keys: list[ApiKeySettings], default_tenant: str) -> None:
        self._enabled = enabled
        self._by_hash = {
            bytes.fromhex(k.sha256): Principal(k.tenant, k.tier, frozenset(k.tiers)) for k in keys
        }
        self._anonymous = Principal(default_tenant, None, frozenset())

    @classmethod
    def from_settings(cls, auth: AuthSettings, environ: Mapping[str, str]) -> KeyTable:
        """The configured keys, those of `auth.keys_file` and of the `auth.keys_env` variable."""
        keys = list(auth.keys)
        if auth.keys_file is not None:
            try:
                text = auth.keys_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"auth.keys_file: cannot read it: {exc.strerror}") from None
            keys += _parse_keys(yaml.safe_load(text) or [], "auth.keys_file")
        if auth.keys_env is not None and environ.get(auth.keys_env):
            try:
                data = orjson.loads(environ[auth.keys_env])
            except orjson.JSONDecodeError:
                raise ConfigError(f"auth.keys_env: ${auth.keys_env} is not JSON") from None
            keys += _parse_keys(data, f"auth.keys_env (${auth.keys_env})")
        return cls(auth.enabled, keys, auth.default_tenant)

    def authenticate(self, authorization: bytes | None) -> Principal:
        """The principal of an `Authorization: Bearer` header; 401 when auth is on and the key
        is missing or unknown, the default tenant when auth is off."""
        if not self._enabled:
            return self._anonymous
        if authorization is None or authorization[:7].lower() != b"bearer ":
            raise invalid_key(
                "You didn't provide an API key. Provide it in an Authorization header "
                "(Authorization: Bearer YOUR_KEY)."
            )
        digest = hashlib.sha256(authorization[7:].strip()).digest()
        principal = self._by_hash.get(digest)
        # The lookup compares hashes of the key, so its timing says nothing about the key.
        if principal is None:
            raise invalid_key("Incorrect API key provided.")
        return principal


def _parse_keys(data: object, where: str) -> list[ApiKeySettings]:
    try:
        return _KEY_LIST.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {path}: {first['msg']}") from None
