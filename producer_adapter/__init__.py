"""The producer adapter: answers the broker's signed questions from a local record system.

Run next to the record system; it connects outbound to the federation's MQTT server,
verifies each question, reads the person's records through a :class:`RecordBackend`,
applies stage 1 of the law (:mod:`producer_adapter.policy`), and publishes a signed reply.

    adapter = open_adapter("adapter.toml")        # or Adapter(AdapterConfig(...), registry)
    await adapter.run(shutdown=stop_event)

The producer's blocks (spärrar) live in its block register
(:class:`SqliteBlockRegister`, or :class:`PostgresBlockRegister` for replicas on several
hosts); what it disclosed, to whom, in its disclosure log
(:class:`SqliteDisclosureLog`). ``samsvar adapter block`` and ``samsvar adapter log``
manage and show them.
"""

from .backends import BackendResult, JsonDirBackend, RecordBackend, open_backend
from .block_register import BlockEvent, BlockScope, RegisteredBlock, SqliteBlockRegister
from .block_register_pg import PostgresBlockRegister
from .blocks import BlockSource, InMemoryBlockSource, load_blocks_file, open_blocks
from .config import AdapterConfig, StoresConfig, load_adapter_config, load_stores_config
from .daemon import Adapter, SignedReply, open_adapter
from .disclosure_log import DisclosureEntry, DisclosureLog, SqliteDisclosureLog
from .errors import (
    AdapterConfigError,
    AdapterError,
    BackendError,
    BlockNotFound,
    BlockRefused,
    BlockSourceError,
    DisclosureLogError,
    QuestionRefused,
    TransportError,
)
from .policy import Block, Disclosure, make_available

__all__ = [
    "Adapter",
    "AdapterConfig",
    "AdapterConfigError",
    "AdapterError",
    "BackendError",
    "BackendResult",
    "Block",
    "BlockEvent",
    "BlockNotFound",
    "BlockRefused",
    "BlockScope",
    "BlockSource",
    "BlockSourceError",
    "Disclosure",
    "DisclosureEntry",
    "DisclosureLog",
    "DisclosureLogError",
    "InMemoryBlockSource",
    "JsonDirBackend",
    "PostgresBlockRegister",
    "QuestionRefused",
    "RecordBackend",
    "RegisteredBlock",
    "SignedReply",
    "SqliteBlockRegister",
    "SqliteDisclosureLog",
    "StoresConfig",
    "TransportError",
    "load_adapter_config",
    "load_blocks_file",
    "load_stores_config",
    "make_available",
    "open_adapter",
    "open_backend",
    "open_blocks",
]
