"""API keys: hashes only, from config, a file or the environment; the hash-key command."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from gateway.admission.keys import KeyTable, hash_key
from gateway.cli import main
from gateway.errors import GatewayError
from gateway.settings import AuthSettings, ConfigError


def entry(key: str, tenant: str) -> dict[str, object]:
    return {"sha256": hash_key(key), "tenant": tenant}


def test_hash_key_prints_the_sha256(capsys) -> None:
    assert main(["hash-key", "s3cret"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(b"s3cret").hexdigest()


def test_keys_from_config_file_and_environment(tmp_path: Path) -> None:
    file = tmp_path / "keys.yaml"
    file.write_text(f"- {{sha256: {hash_key('from-file')}, tenant: filed}}\n")
    auth = AuthSettings(
        enabled=True, keys=[entry("inline", "inline")], keys_file=file, keys_env="PGW_KEYS"
    )
    environ = {"PGW_KEYS": orjson.dumps([entry("from-env", "envy")]).decode()}
    table = KeyTable.from_settings(auth, environ)
    assert table.authenticate(b"Bearer inline").tenant == "inline"
    assert table.authenticate(b"Bearer from-file").tenant == "filed"
    assert table.authenticate(b"bearer from-env").tenant == "envy"
    for header in (None, b"Bearer other", b"Basic aW5saW5l", b"Bearer "):
        with pytest.raises(GatewayError) as caught:
            table.authenticate(header)
        assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")


def test_a_bad_key_file_names_the_field(tmp_path: Path) -> None:
    file = tmp_path / "keys.yaml"
    file.write_text("- {sha256: nothex, tenant: x}\n")
    with pytest.raises(ConfigError, match=r"auth\.keys_file: 0\.sha256"):
        KeyTable.from_settings(AuthSettings(enabled=True, keys_file=file), {})


def test_auth_off_gives_the_default_tenant() -> None:
    table = KeyTable.from_settings(AuthSettings(default_tenant="public"), {})
    assert table.authenticate(None).tenant == "public"
