"""How a role reaches the federation's MQTT server: shared infrastructure, like :mod:`schemas`.

* :mod:`transport.settings`: the ``[mqtt]`` settings (server lists with credentials, TLS,
  limits), which server comes next and the backoff before it
  (:class:`~transport.settings.Reconnect`);
* :mod:`transport.gmqtt_link`: the gmqtt plumbing (one connection per client object,
  the flow-control window, no payloads in logs, oversized packets read past). gmqtt is
  the one MQTT client of the roles (bench/RESULTS.md, "Choosing the broker's MQTT
  client"); aiomqtt is used only by tests and bench/ as an independent peer.

Each role has one MQTT path on top of this: the broker's :class:`broker.mqtt.MqttBus` and
the adapter's :class:`producer_adapter.mqtt.MqttLink`, each one class with one reconnect
loop around a fresh :class:`~transport.gmqtt_link.Client` per connection, both moving
through the server list with :class:`~transport.settings.Reconnect` (the backoff bounds
are here, once). The bus stops when the ``shutdown`` event given to ``run`` is set; the
link when ``close()`` is called, after the adapter has unsubscribed and finished the
questions in flight (it says ``online: false`` first).

Package rules: ``transport`` may import :mod:`schemas` (the topic prefix) and libraries,
never a role; :mod:`schemas` never imports ``transport``. The broker, the producer
adapter and ``samsvar`` (the CLI and demo wiring) import both. The consumer client speaks
HTTP only and imports neither this package nor an MQTT client.
"""
