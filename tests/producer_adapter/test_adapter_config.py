"""Reading the adapter's config file; errors name the file and the key."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from producer_adapter import open_adapter
from producer_adapter.blocks import load_blocks_file, open_blocks
from producer_adapter.config import AdapterConfig, check_against_registry, load_adapter_config
from producer_adapter.errors import AdapterConfigError
from transport.settings import MqttSettings

GOOD = """
[adapter]
producer = "{producer}"
registry = "registry.toml"
key = "keys/{producer}.jwk"
excluded_units = ["{excluded}"]
replica = "a"
max_concurrent = 8

[mqtt]
url = "mqtt://127.0.0.1:18830"
prefix = "test/samsvar/v1/"
protocol = "3.1.1"
shared_subscriptions = false

[backend]
kind = "json_dir"
path = "data/{producer}"
"""


@pytest.fixture
def config_dir(tmp_path: Path, keys: Any, kit: Any, data_dir: Path) -> Path:
    (tmp_path / "registry.toml").write_text(
        kit.registry_text(keys.broker, keys.producer, keys.org, keys.consumer), encoding="utf-8"
    )
    kit.write_key(tmp_path / "keys" / f"{kit.PRODUCER}.jwk", keys.producer)
    (tmp_path / "adapter.toml").write_text(
        GOOD.format(producer=kit.PRODUCER, excluded=kit.EXCLUDED_UNIT), encoding="utf-8"
    )
    return tmp_path


def edit(config_dir: Path, old: str, new: str) -> Path:
    path = config_dir / "adapter.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_good_config(config_dir: Path, keys: Any, kit: Any) -> None:
    cfg = load_adapter_config(config_dir / "adapter.toml")
    assert cfg.producer == kit.PRODUCER
    assert cfg.key.kid == keys.producer.kid
    assert cfg.excluded_units == {kit.EXCLUDED_UNIT}
    assert cfg.replica == "a"
    assert cfg.max_concurrent == 8
    assert cfg.registry == config_dir / "registry.toml"
    assert cfg.base == config_dir
    assert cfg.backend == {"kind": "json_dir", "path": f"data/{kit.PRODUCER}"}
    assert cfg.blocks is None
    assert cfg.mqtt == MqttSettings(port=18830, prefix="test/samsvar/v1", protocol="3.1.1",
                                    shared_subscriptions=False)


def test_defaults(config_dir: Path) -> None:
    path = edit(config_dir, 'replica = "a"\nmax_concurrent = 8\n', "")
    cfg = load_adapter_config(path)
    assert f"-{os.getpid()}-" in cfg.replica
    assert cfg.max_concurrent == 32
    other = load_adapter_config(path)
    assert other.replica != cfg.replica  # two replicas in one process stay apart


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('producer = "SE2321000999-P001"', 'producer = "SE2321000999-P999"',
         r"\[adapter\] producer 'SE2321000999-P999' is not in the registry"),
        ('producer = "SE2321000999-P001"', 'producer = "SE2321000999-P002"',
         r"\[adapter\] key: kid .* is not a registered key of producer 'SE2321000999-P002'"),
        ('producer = "SE2321000999-P001"', "", r"\[adapter\] producer must be a non-empty string"),
        ('registry = "registry.toml"', 'registry = "missing.toml"', r"\[adapter\] registry: .*"),
        ('key = "keys/SE2321000999-P001.jwk"', 'key = "keys/none.jwk"',
         r"\[adapter\] key: .*none\.jwk: cannot read"),
        # a misspelt excluded_units must stop the adapter, never disclose those units
        ("excluded_units = [", "exclude_units = [", r"\[adapter\] has unknown keys: exclude_units"),
        ('excluded_units = ["SE2321000999-U900"]', 'excluded_units = "SE2321000999-U900"',
         r"\[adapter\] excluded_units must be a list"),
        ("max_concurrent = 8", "max_concurrent = 0", r"\[adapter\] max_concurrent must be at"),
        ("max_concurrent = 8", 'max_concurrent = "8"', r"\[adapter\] max_concurrent must be"),
        ("max_concurrent = 8", "max_concurent = 8", r"\[adapter\] has unknown keys: max_concurent"),
        ('replica = "a"', 'replica = "a/b"', r"\[adapter\] replica must be"),
        ('url = "mqtt://127.0.0.1:18830"', 'url = "http://x"', r"\[mqtt\]: MQTT url must be"),
        ('protocol = "3.1.1"', 'protocol = "4"', r"\[mqtt\]: \[mqtt\] protocol must be"),
        ('kind = "json_dir"', 'kind = "nosuch"',
         r"\[backend\] kind 'nosuch' is neither built in \(fhir, json_dir, rivta, sql\) nor an "
         r"installed plugin"),
        ("[backend]", "[backend2]", r"unknown tables: backend2"),
        ("[adapter]", "[adapter", r"not valid TOML"),
    ],
)
def test_errors_name_file_and_key(config_dir: Path, old: str, new: str, message: str) -> None:
    path = edit(config_dir, old, new)
    with pytest.raises(AdapterConfigError, match=message) as err:
        load_adapter_config(path)
    assert str(err.value).startswith(str(path))


def test_missing_backend_table(config_dir: Path) -> None:
    path = config_dir / "adapter.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.index("[backend]")], encoding="utf-8")
    with pytest.raises(AdapterConfigError, match=r"missing \[backend\] table"):
        load_adapter_config(path)


def test_open_adapter(config_dir: Path, kit: Any) -> None:
    adapter = open_adapter(config_dir / "adapter.toml")
    assert adapter.config.producer == kit.PRODUCER
    assert kit.PRODUCER in adapter.registry.producers


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(AdapterConfigError, match="cannot read config"):
        load_adapter_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "key file is not JSON"),
        ("[]", "must hold one JWK object"),
        ("PUBLIC", "public JWK"),
        ("FOREIGN", "is not a registered key"),
        ('{"kid": "k", "kty": "OKP", "crv": "Ed25519", "x": "AA", "d": "AA"}', "must be 32 bytes"),
    ],
)
def test_key_file_errors(config_dir: Path, keys: Any, kit: Any, content: str,
                         message: str) -> None:
    key_file = config_dir / "keys" / f"{kit.PRODUCER}.jwk"
    if content == "PUBLIC":
        content = json.dumps(keys.producer.public.to_jwk())
    elif content == "FOREIGN":
        content = json.dumps(keys.stranger.to_jwk())
    key_file.write_text(content)
    with pytest.raises(AdapterConfigError, match=message):
        load_adapter_config(config_dir / "adapter.toml")


def test_blocks_table(config_dir: Path, kit: Any) -> None:
    blocks = [{"subject": kit.PERSON, "level": "unit", "target": kit.UNIT_2,
               "registered_by": kit.PERSON}]
    (config_dir / "blocks.json").write_text(json.dumps(blocks))
    path = config_dir / "adapter.toml"
    path.write_text(path.read_text() + '\n[blocks]\nkind = "json_file"\npath = "blocks.json"\n')
    cfg = load_adapter_config(path)
    assert cfg.blocks == {"kind": "json_file", "path": "blocks.json"}
    assert open_blocks(cfg.blocks, base=cfg.base) is not None


@pytest.mark.parametrize(
    "table, message",
    [
        ('kind = "postgres"',
         r'\[blocks\] kind must be "sqlite", "postgresql" or "json_file", not \'postgres\''),
        ('kind = "postgresql"\npath = "b.db"', r"\[blocks\] has unknown keys: path"),
        ('kind = "postgresql"\ndsn = "x"', r"\[blocks\] dsn must be a postgresql:// URL"),
        ('kind = "sqlite"', r"\[blocks\] path must be"),
        ('kind = "sqlite"\npath = "b.db"\nlock_timeout = 0', r"\[blocks\] lock_timeout must be"),
        ('kind = "json_file"\npath = "b.json"\nlock_timeout = 1', r"\[blocks\] has unknown keys"),
        ('kind = "json_file"', r"\[blocks\] path must be"),
        ('kind = "json_file"\npath = "b.json"\nx = 1', r"\[blocks\] has unknown keys: x"),
    ],
)
def test_bad_blocks_table(config_dir: Path, table: str, message: str) -> None:
    path = config_dir / "adapter.toml"
    path.write_text(path.read_text() + f"\n[blocks]\n{table}\n")
    with pytest.raises(AdapterConfigError, match=message):
        load_adapter_config(path)


async def test_blocks_file(tmp_path: Path, kit: Any) -> None:
    file = tmp_path / "blocks.json"
    file.write_text(json.dumps([
        {"subject": kit.PERSON, "level": "unit", "target": kit.UNIT_2},
        {"subject": kit.PERSON, "level": "care_process", "target": "cp-1", "registered_by": "x"},
    ]))
    source = load_blocks_file(file)
    assert [b.level for b in await source.blocks_for(kit.PERSON)] == ["unit", "care_process"]
    assert await source.blocks_for(kit.PERSON_2) == []


@pytest.mark.parametrize(
    "content, message",
    [
        ("[{]", "invalid block file"),
        ('[{"subject": "195001182046", "level": "person", "target": "x"}]', "invalid block file"),
        ('[{"subject": "195001182046", "level": "unit", "target": ""}]', "invalid block file"),
        ('[{"subject": "19500118-2046", "level": "unit", "target": "u"}]', r"block #1: subject"),
    ],
)
def test_bad_blocks_file(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "blocks.json"
    file.write_text(content)
    with pytest.raises(AdapterConfigError, match=message) as err:
        load_blocks_file(file)
    assert str(file) in str(err.value)


def test_config_in_code(keys: Any, kit: Any, registry: Any) -> None:
    cfg = AdapterConfig(producer=kit.PRODUCER, key=keys.producer, mqtt=MqttSettings())
    check_against_registry(cfg, registry)
    assert cfg.max_concurrent == 32 and cfg.excluded_units == frozenset()
    with pytest.raises(AdapterConfigError, match="max_concurrent"):
        AdapterConfig(producer=kit.PRODUCER, key=keys.producer, mqtt=MqttSettings(),
                      max_concurrent=0)
    with pytest.raises(AdapterConfigError, match="is not a registered key"):
        check_against_registry(
            AdapterConfig(producer=kit.PRODUCER, key=keys.stranger, mqtt=MqttSettings()),
            registry,
        )
