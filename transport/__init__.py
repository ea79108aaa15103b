"""How a role reaches the federation's MQTT server: shared infrastructure, like :mod:`schemas`.

* :mod:`transport.settings`: the ``[mqtt]`` settings (server lists with credentials, TLS,
  limits), which server comes next and the backoff before it (:class:`~transport.settings.Reconnect`);
* :mod:`transport.gmqtt_link`: the gmqtt plumbing (one connection per client object,
  the flow-control window, no payloads in logs, oversized packets read past). gmqtt is
  the one MQTT client of the roles (bench/RESULTS.md, "Choosing the broker's MQTT
  client"); aiomqtt is used only by tests and bench/ as an independent peer.

Package rules: ``transport`` may import :mod:`schemas` (the topic prefix) and libraries,
never a role; :mod:`schemas` never imports ``transport``. The broker, the producer
adapter and ``samsvar`` (the CLI and demo wiring) import both. The consumer client speaks
HTTP only and imports neither this package nor an MQTT client.
"""
