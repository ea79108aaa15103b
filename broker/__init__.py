"""The central broker: authenticates queries, applies the law, fans out over MQTT, merges.

Imports ``schemas`` and ``transport`` (shared infrastructure); never the producer adapter
or the consumer client.
"""

from .app import BrokerServer
from .config import BrokerConfig, load_broker_config
from .errors import BrokerError, ConfigError, QueryRejected

__all__ = ["BrokerConfig", "BrokerError", "BrokerServer", "ConfigError", "QueryRejected",
           "load_broker_config"]
