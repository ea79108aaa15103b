"""The adapter's configuration: one frozen dataclass, read from TOML or built in code.

::

    [adapter]
    producer = "SE2321000999-P001"          # must exist in the registry
    registry = "registry.toml"              # paths are relative to this file
    key = "keys/SE2321000999-P001.jwk"      # the producer's private JWK, with its kid
    excluded_units = ["SE2321000999-U900"]  # units that have not joined: never disclosed
    replica = "a"                           # optional; default <host>-<pid>-<random>
    max_concurrent = 32                     # questions handled at once

    [mqtt]                                  # see transport.settings.MqttSettings
    url = "mqtt://127.0.0.1:1883"

    [backend]                               # see producer_adapter.backends
    kind = "json_dir"
    path = "data/SE2321000999-P001"

    [blocks]                                # optional; see producer_adapter.blocks
    kind = "sqlite"                         # or "postgresql" with dsn and schema
    path = "blocks.db"

    [disclosure_log]                        # optional; see producer_adapter.disclosure_log
    path = "disclosures.db"                 # the default: the log is always kept

    [witness]                               # optional; see producer_adapter.witness
    path = "witness.json"                   # the default: the broker's checkpoints it saw

    [own_view]                              # optional; the person's own view (SPEC 9)
    release_delay_days = { lab_results = 14 }   # per type: shown this long after its time
    guardian_blocks = "guardian_blocks.db"  # units' blocks of a guardian's access to a child

:func:`load_stores_config` reads only what the ``samsvar adapter block`` and ``log``
commands need (producer, registry, ``[blocks]``, ``[disclosure_log]``): never the key.
"""

from __future__ import annotations

import os
import secrets
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from schemas.errors import RegistryError
from schemas.jose import PrivateKey, load_private_key
from schemas.records import OWN_VIEW_TYPES
from schemas.registry import Registry, load_registry
from transport.settings import MqttSettings

from .backends import check_backend_table
from .block_register import BlockScope, SqliteBlockRegister
from .block_register_pg import PostgresBlockRegister
from .blocks import check_blocks_table, open_register
from .disclosure_log import DEFAULT_DISCLOSURE_LOG, SqliteDisclosureLog
from .errors import AdapterConfigError
from .guardian_blocks import GuardianBlockRegister

__all__ = [
    "AdapterConfig",
    "StoresConfig",
    "check_against_registry",
    "default_replica",
    "load_adapter_config",
    "load_stores_config",
]

_ADAPTER_KEYS: Final = frozenset(
    {"producer", "registry", "key", "excluded_units", "replica", "max_concurrent"}
)
_TABLES: Final = frozenset({"adapter", "mqtt", "backend", "blocks", "disclosure_log", "witness",
                            "own_view"})
_OWN_VIEW_KEYS: Final = frozenset({"release_delay_days", "guardian_blocks"})


def default_replica() -> str:
    """``<host>-<pid>-<random>``: unique even for two replicas in one process."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass(frozen=True, kw_only=True)
class AdapterConfig:
    """Everything one adapter replica needs, besides the registry."""

    producer: str
    key: PrivateKey
    mqtt: MqttSettings
    backend: Mapping[str, Any] = field(default_factory=dict)
    """The ``[backend]`` table; unused when a backend object is given to the adapter."""
    blocks: Mapping[str, Any] | None = None
    """The ``[blocks]`` table, or ``None`` for no block source (no blocks applied)."""
    disclosure_log: Path | None = None
    """The disclosure log's file (relative to ``base``), or ``None``: no log (code only;
    a config file always has one)."""
    witness: Path | None = None
    """The file keeping the broker's latest checkpoints (relative to ``base``), or ``None``:
    no witness (code only; a config file always has one, ``witness.json`` by default)."""
    excluded_units: frozenset[str] = frozenset()
    release_delay_days: Mapping[str, int] = field(default_factory=dict)
    """Own view: information type → days after a record's time before it is shown."""
    guardian_blocks: Path | None = None
    """Own view: the register of units' blocks of a guardian's access to a child
    (relative to ``base``), or ``None``: no such blocks."""
    replica: str = field(default_factory=default_replica)
    max_concurrent: int = 32
    base: Path = Path(".")
    """Directory that relative paths in ``backend``, ``blocks`` and ``disclosure_log`` are
    resolved against."""
    registry: Path | None = None
    """The registry file named by the config, when read from one."""
    source: str = ""
    """The config file, for messages."""

    def __post_init__(self) -> None:
        if not self.producer:
            raise AdapterConfigError(f"{_where(self)}[adapter] producer must not be empty")
        if self.max_concurrent < 1:
            raise AdapterConfigError(f"{_where(self)}[adapter] max_concurrent must be at least 1")
        if not self.replica or "/" in self.replica or "+" in self.replica or "#" in self.replica:
            raise AdapterConfigError(
                f"{_where(self)}[adapter] replica must be non-empty, without '/', '+' or '#'"
            )


def _where(config: AdapterConfig) -> str:
    return f"{config.source}: " if config.source else ""


def check_against_registry(config: AdapterConfig, registry: Registry) -> None:
    """Refuse a producer the registry does not know, or a key not registered for it."""
    where = _where(config)
    producer = registry.producers.get(config.producer)
    if producer is None:
        raise AdapterConfigError(
            f"{where}[adapter] producer {config.producer!r} is not in the registry "
            f"{registry.path or ''}".rstrip()
        )
    registered = producer.keys.get(config.key.kid)
    if registered is None or registered.to_jwk() != config.key.public.to_jwk():
        raise AdapterConfigError(
            f"{where}[adapter] key: kid {config.key.kid!r} is not a registered key of "
            f"producer {config.producer!r}"
        )


def _table(doc: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any] | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, dict):
        raise AdapterConfigError(f"{where}: [{name}] must be a table")
    return value


@dataclass(frozen=True, kw_only=True)
class StoresConfig:
    """The adapter's local stores, as a config file names them (no key, no MQTT)."""

    producer: str
    registry: Path
    blocks: Mapping[str, Any] | None
    disclosure_log: Path
    base: Path
    source: str
    guardian_blocks: Path | None = None
    """``[own_view] guardian_blocks``, relative to ``base``."""
    release_delay_days: Mapping[str, int] = field(default_factory=dict)

    def guardian_register(self) -> GuardianBlockRegister:
        """The register of units' blocks of a guardian's access to a child."""
        if self.guardian_blocks is None:
            raise AdapterConfigError(
                f"{self.source}: no [own_view] guardian_blocks: add "
                "guardian_blocks = \"guardian_blocks.db\" to an [own_view] table")
        return GuardianBlockRegister(self.base / self.guardian_blocks)

    def block_register(
        self, *, scope: BlockScope | None = None
    ) -> SqliteBlockRegister | PostgresBlockRegister:
        """The block register, SQLite or PostgreSQL (``scope`` is needed to add blocks)."""
        if self.blocks is None:
            raise AdapterConfigError(
                f"{self.source}: no [blocks] table: add one with kind = \"sqlite\" and "
                "path = \"blocks.db\"")
        if self.blocks["kind"] not in ("sqlite", "postgresql"):
            raise AdapterConfigError(
                f"{self.source}: [blocks] kind {self.blocks['kind']!r} is a read-only seed "
                "format; the block register is kind = \"sqlite\" or \"postgresql\"")
        return open_register(self.blocks, base=self.base, scope=scope)

    def disclosures(self) -> SqliteDisclosureLog:
        """The disclosure log."""
        return SqliteDisclosureLog(self.base / self.disclosure_log)


def _read(path: str | Path) -> tuple[dict[str, Any], Mapping[str, Any], StoresConfig]:
    """The TOML document, its ``[adapter]`` table, and the checked store settings."""
    p = Path(path)
    where = str(p)
    base = p.parent
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AdapterConfigError(f"{where}: cannot read config: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AdapterConfigError(f"{where}: not valid TOML: {exc}") from exc
    unknown = set(doc) - _TABLES
    if unknown:
        raise AdapterConfigError(f"{where}: unknown tables: {', '.join(sorted(unknown))}")

    adapter = _table(doc, "adapter", where)
    if adapter is None:
        raise AdapterConfigError(f"{where}: missing [adapter] table")
    unknown = set(adapter) - _ADAPTER_KEYS
    if unknown:
        raise AdapterConfigError(
            f"{where}: [adapter] has unknown keys: {', '.join(sorted(unknown))}"
        )
    blocks = _table(doc, "blocks", where)
    if blocks is not None:
        check_blocks_table(blocks, where=where)
    log = _table(doc, "disclosure_log", where) or {}
    unknown = set(log) - {"path"}
    if unknown:
        raise AdapterConfigError(
            f"{where}: [disclosure_log] has unknown keys: {', '.join(sorted(unknown))}"
        )
    log_path = log.get("path", DEFAULT_DISCLOSURE_LOG)
    if not isinstance(log_path, str) or not log_path:
        raise AdapterConfigError(f"{where}: [disclosure_log] path must be a non-empty string")
    own_view = _table(doc, "own_view", where) or {}
    unknown = set(own_view) - _OWN_VIEW_KEYS
    if unknown:
        raise AdapterConfigError(
            f"{where}: [own_view] has unknown keys: {', '.join(sorted(unknown))}")
    delays = own_view.get("release_delay_days", {})
    if not isinstance(delays, dict) or not all(
            t in OWN_VIEW_TYPES and isinstance(n, int) and not isinstance(n, bool) and n >= 0
            for t, n in delays.items()):
        raise AdapterConfigError(
            f"{where}: [own_view] release_delay_days maps own-view types "
            f"({', '.join(sorted(OWN_VIEW_TYPES))}) to whole days (0 or more)")
    guardian = own_view.get("guardian_blocks")
    if guardian is not None and (not isinstance(guardian, str) or not guardian):
        raise AdapterConfigError(f"{where}: [own_view] guardian_blocks must be a file path")
    stores = StoresConfig(
        producer=_string(adapter, "producer", where),
        registry=base / _string(adapter, "registry", where),
        blocks=dict(blocks) if blocks is not None else None,
        disclosure_log=Path(log_path), base=base, source=where,
        guardian_blocks=Path(guardian) if guardian else None,
        release_delay_days=dict(delays),
    )
    return doc, adapter, stores


def _string(adapter: Mapping[str, Any], key: str, where: str) -> str:
    value = adapter.get(key)
    if not isinstance(value, str) or not value:
        raise AdapterConfigError(f"{where}: [adapter] {key} must be a non-empty string")
    return value


def load_stores_config(path: str | Path) -> StoresConfig:
    """Read the parts of an adapter config that name its block register and disclosure log.

    The key file, MQTT and backend settings are neither read nor needed.
    """
    return _read(path)[2]


def load_adapter_config(path: str | Path) -> AdapterConfig:
    """Read and check an adapter config file, its key and the registry it names."""
    doc, adapter, stores = _read(path)
    where, base = stores.source, stores.base

    producer = stores.producer
    excluded = adapter.get("excluded_units", [])
    if not isinstance(excluded, list) or not all(isinstance(u, str) and u for u in excluded):
        raise AdapterConfigError(f"{where}: [adapter] excluded_units must be a list of unit ids")
    max_concurrent = adapter.get("max_concurrent", 32)
    if not isinstance(max_concurrent, int) or isinstance(max_concurrent, bool):
        raise AdapterConfigError(f"{where}: [adapter] max_concurrent must be an integer")
    replica = adapter.get("replica")
    if replica is not None and not isinstance(replica, str):
        raise AdapterConfigError(f"{where}: [adapter] replica must be a string")

    try:
        mqtt = MqttSettings.from_table(_table(doc, "mqtt", where) or {}, base=base)
    except (ValueError, TypeError) as exc:
        raise AdapterConfigError(f"{where}: [mqtt]: {exc}") from exc

    backend = _table(doc, "backend", where)
    if backend is None:
        raise AdapterConfigError(f"{where}: missing [backend] table")
    check_backend_table(backend, where=where)

    witness = _table(doc, "witness", where) or {}
    if set(witness) - {"path"}:
        raise AdapterConfigError(
            f"{where}: [witness] has unknown keys: {', '.join(sorted(set(witness) - {'path'}))}")
    witness_path = witness.get("path", "witness.json")
    if not isinstance(witness_path, str) or not witness_path:
        raise AdapterConfigError(f"{where}: [witness] path must be a non-empty string")

    key_path = base / _string(adapter, "key", where)
    try:
        try:
            key = load_private_key(key_path)
        except ValueError as exc:
            raise AdapterConfigError(str(exc)) from exc
    except AdapterConfigError as exc:
        raise AdapterConfigError(f"{where}: [adapter] key: {exc}") from exc
    registry_path = stores.registry
    config = AdapterConfig(
        producer=producer, key=key, mqtt=mqtt, backend=dict(backend),
        blocks=stores.blocks, disclosure_log=stores.disclosure_log,
        witness=Path(witness_path),
        excluded_units=frozenset(excluded), max_concurrent=max_concurrent,
        release_delay_days=stores.release_delay_days, guardian_blocks=stores.guardian_blocks,
        replica=replica if replica is not None else default_replica(),
        base=base, registry=registry_path, source=where,
    )
    try:
        registry = load_registry(registry_path)
    except RegistryError as exc:
        raise AdapterConfigError(f"{where}: [adapter] registry: {exc}") from exc
    check_against_registry(config, registry)
    return config
