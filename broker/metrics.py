"""The broker's Prometheus metrics (prometheus-client), served at ``GET /metrics``.

One :class:`BrokerMetrics` per broker, each in its own ``CollectorRegistry``: nothing is
registered in the library's global registry, so two brokers in one process never collide.
It is a :class:`~broker.ports.QueryObserver`; gauges and the dropped-reply counts are read
from the service when scraped. Labels are bounded: producer ids from the registry, source
statuses, outcomes, and the problem slugs of :data:`broker.errors.PROBLEM_TYPES`.

=========================================  =========  ======================================
metric                                     labels     what
=========================================  =========  ======================================
samsvar_queries_total                      outcome,   queries answered / refused / error;
                                           reason     reason: the rule or problem slug
samsvar_answer_seconds                                fan-out to durable log, answered only
samsvar_producer_reply_seconds             producer   question sent → verified reply
samsvar_producer_sources_total             producer,  each producer's status per query
                                           status
samsvar_queries_in_flight                             queries being answered now
samsvar_mqtt_connected                                1 while connected to MQTT, else 0
samsvar_access_log_commit_seconds                     entry handed to the log → committed
samsvar_replies_dropped_total              reason     replies not used (see Gatherer)
samsvar_access_log_commits_total                      durable commits of the access log
samsvar_mqtt_messages_dropped_total        reason     incoming MQTT messages dropped
                                                      (too_large: above max_message_bytes)
=========================================  =========  ======================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, get_args

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from schemas.messages import SourceStatus

from .observe import rejection_outcome

if TYPE_CHECKING:
    from .service import QueryService

__all__ = ["BrokerMetrics"]

_ANSWER_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COMMIT_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                          1.0, 2.5)


class _DroppedReplies:
    """Reads the gatherer's counters when scraped, so dropping a reply costs nothing more."""

    def __init__(self, service: QueryService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "samsvar_replies_dropped",
            "Replies from the MQTT reply topic that were not used, by reason",
            labels=["reason"])
        for name, value in dataclasses.asdict(self._service.gatherer.counters).items():
            family.add_metric([name], value)
        yield family


class _DroppedMessages:
    """Incoming MQTT messages the bus dropped (above ``max_message_bytes``), when scraped."""

    def __init__(self, service: QueryService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "samsvar_mqtt_messages_dropped",
            "Incoming MQTT messages dropped unread, by reason (too_large: above "
            "[mqtt] max_message_bytes)", labels=["reason"])
        bus = self._service.bus
        dropped = getattr(bus, "dropped", None)
        family.add_metric(["too_large"], dropped.too_large if dropped is not None else 0)
        yield family


class _AccessLogCommits:
    """The access log's durable commits (one per group of entries), read when scraped."""

    def __init__(self, service: QueryService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "samsvar_access_log_commits",
            "Durable commits of the access log; entries / commits is the group-commit size")
        family.add_metric([], self._service.access_log.commits)
        yield family


class BrokerMetrics:
    """The metrics of one broker, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry, service: QueryService) -> None:
        self.registry = registry
        self.queries = Counter(
            "samsvar_queries", "Queries by outcome; reason is the refusal rule or problem slug",
            ["outcome", "reason"], registry=registry)
        self.answer_seconds = Histogram(
            "samsvar_answer_seconds",
            "Time to answer a query, from fan-out to its durable access-log entry",
            buckets=_ANSWER_BUCKETS, registry=registry)
        self.producer_reply_seconds = Histogram(
            "samsvar_producer_reply_seconds",
            "Time from publishing a question to the producer's verified reply",
            ["producer"], buckets=_ANSWER_BUCKETS, registry=registry)
        self.producer_sources = Counter(
            "samsvar_producer_sources",
            "Each producer's source status in the answers (ok, no_data, timeout, ...)",
            ["producer", "status"], registry=registry)
        self.unreadable = Counter(
            "samsvar_producer_unreadable_records",
            "Records a producer said it holds for a question but could not read",
            ["producer"], registry=registry)
        self.in_flight = Gauge(
            "samsvar_queries_in_flight", "Queries being answered right now", registry=registry)
        self.in_flight.set_function(lambda: service.in_flight)
        self.mqtt_connected = Gauge(
            "samsvar_mqtt_connected", "1 while the broker is connected to MQTT, else 0",
            registry=registry)
        self.mqtt_connected.set_function(
            lambda: 1.0 if service.bus.connected.is_set() else 0.0)
        self.access_log_commit_seconds = Histogram(
            "samsvar_access_log_commit_seconds",
            "Time from handing an entry to the access log until it is durably committed "
            "(group-commit wait included)",
            buckets=_COMMIT_BUCKETS, registry=registry)
        registry.register(_DroppedReplies(service))
        registry.register(_AccessLogCommits(service))
        registry.register(_DroppedMessages(service))
        self._answered = self.queries.labels("answered", "")
        # Every series exists from the start (a scrape sees zeros, not gaps), and each
        # reply's two updates skip prometheus_client's label lookup (311 per question).
        self._reply_seconds = {producer: self.producer_reply_seconds.labels(producer)
                               for producer in service.registry.producers}
        self._sources = {(producer, status): self.producer_sources.labels(producer, status)
                         for producer in service.registry.producers
                         for status in get_args(SourceStatus)}

    def exposition(self) -> tuple[bytes, str]:
        """The text to serve at ``/metrics`` and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # -- QueryObserver -------------------------------------------------------------

    def query_answered(self, seconds: float) -> None:
        self._answered.inc()
        self.answer_seconds.observe(seconds)

    def query_rejected(self, *, status: int, reason: str) -> None:
        self.queries.labels(rejection_outcome(status), reason).inc()

    def source_finished(self, producer: str, status: SourceStatus,
                        latency_s: float | None, unreadable: int = 0) -> None:
        self._sources[producer, status].inc()
        if unreadable:
            self.unreadable.labels(producer).inc(unreadable)
        if latency_s is not None:
            self._reply_seconds[producer].observe(latency_s)

    def access_log_committed(self, seconds: float) -> None:
        self.access_log_commit_seconds.observe(seconds)
