"""One process hosting a group of producer adapters (asyncio tasks, one MQTT link each).

    python -m bench.producers SPEC.json

``SPEC.json`` is written by :meth:`bench.federation.Federation.group_spec`. Each adapter is
a real :class:`producer_adapter.Adapter` (question verified, stage 1 of the law applied,
reply signed) over its own MQTT connection, reading an :class:`~bench.backend.InMemoryBackend`
with no block register and no disclosure log. Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import structlog

from producer_adapter import Adapter, AdapterConfig, InMemoryBlockSource
from samsvar.cli import event_loop_factory
from schemas.jose import load_private_key
from schemas.registry import load_registry
from transport.settings import MqttSettings

from .backend import InMemoryBackend

__all__ = ["main"]


async def serve(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text(encoding="utf-8"))  # noqa: ASYNC240 - once, at start
    registry = load_registry(spec["registry"])
    mqtt = MqttSettings(port=spec["mqtt_port"], prefix=spec["prefix"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    adapters = []
    for p in spec["producers"]:
        config = AdapterConfig(producer=p["id"], key=load_private_key(p["key"]), mqtt=mqtt,
                               replica=f"bench-{p['id'][-3:]}", base=spec_path.parent,
                               max_concurrent=64)
        adapters.append(Adapter(config, registry,
                                backend=InMemoryBackend(p["id"], pad=spec["pad"]),
                                blocks=InMemoryBlockSource()))
    async with asyncio.TaskGroup() as tg:
        for adapter in adapters:
            tg.create_task(adapter.run(shutdown=stop), name=f"adapter-{adapter.producer.id}")
            await asyncio.sleep(0.005)  # no thundering herd of CONNECTs
        await asyncio.wait_for(asyncio.gather(*(a.ready.wait() for a in adapters)), 60)
        print(f"ready {len(adapters)}", flush=True)
        await stop.wait()


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
                        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
                        cache_logger_on_first_use=True)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:  # as `samsvar adapter`
        runner.run(serve(Path(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
