"""The producer adapter: answers the broker's signed questions from a local record system.

Run next to the record system; it connects outbound to the federation's MQTT server,
verifies each question, reads the person's records through a :class:`RecordBackend`,
applies stage 1 of the law (:mod:`producer_adapter.policy`), and publishes a signed reply.

    adapter = open_adapter("adapter.toml")        # or Adapter(AdapterConfig(...), registry)
    await adapter.run(shutdown=stop_event)
"""

from .backends import BackendResult, JsonDirBackend, RecordBackend, open_backend
from .blocks import BlockSource, InMemoryBlockSource, load_blocks_file, open_blocks
from .config import AdapterConfig, load_adapter_config
from .daemon import Adapter, SignedReply, open_adapter
from .errors import (
    AdapterConfigError,
    AdapterError,
    BackendError,
    BlockSourceError,
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
    "BlockSource",
    "BlockSourceError",
    "Disclosure",
    "InMemoryBlockSource",
    "JsonDirBackend",
    "QuestionRefused",
    "RecordBackend",
    "SignedReply",
    "TransportError",
    "load_adapter_config",
    "load_blocks_file",
    "make_available",
    "open_adapter",
    "open_backend",
    "open_blocks",
]
