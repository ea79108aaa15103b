"""An end-to-end federation per test: real MQTT server, broker and adapters, real keys.

Only the MQTT server is shared with ``tests/conftest.py``; everything else is built here
from scratch in ``tmp_path`` so each test owns its registry, keys and topic prefix.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from broker import BrokerConfig, BrokerServer
from broker.accesslog import AccessLogConfig
from consumer_client import make_claims, sign_query
from producer_adapter import Adapter, AdapterConfig
from producer_adapter.backends import RecordBackend
from schemas.jose import PrivateKey, generate_key
from schemas.messages import QueryClaims, User
from schemas.records import UnitRef
from schemas.registry import Registry, parse_registry
from tests.conftest import MqttServer

BROKER_ID = "SE0000000000-TEST"
CARE_GIVER = "SE2321000999-RE01"
SOCIAL_CARE_GIVER = "SE2120009999-EK01"
CITIZEN_PORTAL = "SE5560000000-INV1"
PERSON = "193803039142"  # from Skatteverket's test personnummer
USER = User(id="SE2321000999-ANLI", name="Anna Lind", role="Läkare",
            unit=UnitRef(id="SE2321000999-U100", name="Akuten"))


def user_of(issuer: str) -> User:
    """:data:`USER`, moved to the issuing organisation (its HSA-id prefix): the broker
    refuses a user or unit of another organisation (``unit-not-of-issuer``)."""
    org = issuer.partition("-")[0]
    return User(id=f"{org}-ANLI", name=USER.name, role=USER.role,
                unit=UnitRef(id=f"{org}-U100", name=USER.unit.name))


def record(producer: str, n: int, *, when: str, type_: str = "medication",
           scope: str = "hsl", unit: str = "U1", text: str = "") -> dict[str, Any]:
    """A record as a producer's JSON file holds it."""
    base: dict[str, Any] = {
        "type": type_, "id": f"{producer}-{n}", "time": when, "scope": scope,
        "source": {"producer": producer,
                   "organisation": {"id": f"ORG-{producer}", "name": producer},
                   "unit": {"id": unit, "name": f"Enhet {unit}"}, "system": "test"},
    }
    if type_ == "medication":
        base["drug"] = text or f"Läkemedel {n}"
    elif type_ == "care_documentation":
        base["title"] = f"Anteckning {n}"
        base["text"] = text
    elif type_ == "alerts":
        base.update(category="allergy", description=text or "Penicillinallergi")
    return base


@dataclass
class ProducerSpec:
    id: str
    types: list[str] = field(default_factory=lambda: ["medication", "care_documentation",
                                                      "alerts"])
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    excluded_units: list[str] = field(default_factory=list)
    own_view_types: list[str] = field(default_factory=list)
    """What the producer offers in the person's own view (SPEC section 9)."""
    ombud_types: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=lambda: ["U1"])
    release_delay_days: dict[str, int] = field(default_factory=dict)
    blocks: list[dict[str, str]] = field(default_factory=list)
    """Blocks (spärrar) as a ``json_file`` block source holds them."""


@dataclass
class Federation:
    tmp: Path
    server: MqttServer
    prefix: str
    registry: Registry
    keys: dict[str, PrivateKey]
    producers: dict[str, ProducerSpec]
    broker: BrokerServer | None = None
    url: str = ""
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    adapters: dict[str, list[tuple[Adapter, asyncio.Event, asyncio.Task[None]]]] = field(
        default_factory=dict)
    http: aiohttp.ClientSession | None = None

    # -- running parts ------------------------------------------------------------

    async def start_broker(self, **overrides: Any) -> BrokerServer:
        overrides.setdefault("instance", f"b-{uuid.uuid4().hex[:6]}")
        config = BrokerConfig(
            registry_path=self.tmp / "registry.toml", key_path=self.tmp / "broker.jwk",
            port=0, mqtt=self.server.settings(self.prefix),
            access_log=AccessLogConfig(path=self.tmp / "access-log.db"), **overrides,
        )
        self.broker = BrokerServer(config, registry=self.registry, key=self.keys["broker"])
        self.tasks.append(asyncio.create_task(self.broker.run(shutdown=self.shutdown)))
        await asyncio.wait_for(self.broker.started.wait(), 10)
        await asyncio.wait_for(self.broker.bus.connected.wait(), 10)
        self.url = f"http://127.0.0.1:{self.broker.port}"
        return self.broker

    def adapter_config(self, producer_id: str, *, replica: str | None = None,
                       key: PrivateKey | None = None) -> AdapterConfig:
        spec = self.producers[producer_id]
        return AdapterConfig(
            producer=producer_id, key=key or self.keys[producer_id],
            mqtt=self.server.settings(self.prefix),
            backend={"kind": "json_dir", "path": str(self.tmp / "data" / producer_id)},
            excluded_units=frozenset(spec.excluded_units), base=self.tmp,
            replica=replica or f"r-{uuid.uuid4().hex[:6]}",
            witness=Path("producers") / producer_id / "witness.json",
            release_delay_days=spec.release_delay_days,
            guardian_blocks=Path(f"guardian-blocks-{producer_id}.db"),
            blocks=({"kind": "json_file", "path": f"blocks-{producer_id}.json"}
                    if spec.blocks else None),
        )

    async def start_adapter(self, producer_id: str, *, replica: str | None = None,
                            backend: RecordBackend | None = None) -> Adapter:
        adapter = Adapter(self.adapter_config(producer_id, replica=replica), self.registry,
                          backend=backend)
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(shutdown=stop))
        self.adapters.setdefault(producer_id, []).append((adapter, stop, task))
        await asyncio.wait_for(adapter.ready.wait(), 10)
        return adapter

    async def stop_adapters(self, producer_id: str) -> None:
        for _, stop, task in self.adapters.pop(producer_id, []):
            stop.set()
            await asyncio.wait_for(task, 10)

    async def wait_presence(self, producer_id: str, online: bool = True,
                            timeout: float = 10) -> None:
        assert self.broker is not None
        async with asyncio.timeout(timeout):
            while self.broker.service.presence.is_online(producer_id) is not online:
                await asyncio.sleep(0.01)

    # -- asking -----------------------------------------------------------------------

    def claims(self, issuer: str = CARE_GIVER, **kw: Any) -> QueryClaims:
        args: dict[str, Any] = dict(issuer=issuer, audience=BROKER_ID, user=user_of(issuer),
                                    subject=PERSON, types=["medication"], basis="consent")
        args.update(kw)
        return make_claims(**args)

    def token(self, issuer: str = CARE_GIVER, *, key: PrivateKey | None = None,
              **kw: Any) -> str:
        return sign_query(self.claims(issuer, **kw), key or self.keys[issuer])

    def claims_token(self, claims: QueryClaims, issuer: str = CARE_GIVER) -> str:
        return sign_query(claims, self.keys[issuer])

    async def post(self, token: str | bytes, *, content_type: str = "application/jwt",
                   accept: str = "application/json",
                   path: str = "/v1/queries") -> tuple[int, dict[str, str], Any]:
        assert self.http is not None
        data = token.encode() if isinstance(token, str) else token
        async with self.http.post(f"{self.url}{path}", data=data,
                                  headers={"Content-Type": content_type,
                                           "Accept": accept}) as resp:
            body = await resp.read()
            headers = dict(resp.headers)
            parsed = json.loads(body) if body else None
            return resp.status, headers, parsed

    async def ask(self, **kw: Any) -> dict[str, Any]:
        status, _, body = await self.post(self.token(**kw))
        assert status == 200, body
        return body  # type: ignore[no-any-return]


def build_federation(tmp: Path, server: MqttServer, prefix: str,
                     producers: Sequence[ProducerSpec]) -> Federation:
    keys = {"broker": generate_key("EdDSA"), CARE_GIVER: generate_key("ES256"),
            SOCIAL_CARE_GIVER: generate_key("EdDSA"), CITIZEN_PORTAL: generate_key("EdDSA"),
            "PRODORG": generate_key("EdDSA")}
    for spec in producers:
        keys[spec.id] = generate_key("EdDSA")

    def jwk(name: str) -> str:
        public = keys[name].public.to_jwk()
        return "[{ " + ", ".join(f'{k} = "{v}"' for k, v in public.items()) + " }]"

    lines = ["[broker]", f'id = "{BROKER_ID}"', f"keys = {jwk('broker')}", "",
             "[[participants]]", f'id = "{CARE_GIVER}"', 'name = "Region Exempel"',
             'kind = "vårdgivare"', 'roles = ["consumer"]', f"keys = {jwk(CARE_GIVER)}", "",
             "[[participants]]", f'id = "{SOCIAL_CARE_GIVER}"', 'name = "Exempel kommun"',
             'kind = "omsorgsgivare"', 'roles = ["consumer"]',
             f"keys = {jwk(SOCIAL_CARE_GIVER)}", "",
             "[[participants]]", f'id = "{CITIZEN_PORTAL}"', 'name = "Invånartjänst"',
             'kind = "annan"', 'roles = ["log-extract", "citizen-portal"]',
             f"keys = {jwk(CITIZEN_PORTAL)}", "",
             "[[participants]]", 'id = "PRODORG"', 'name = "Producentorganisation"',
             'kind = "vårdgivare"', 'roles = ["producer"]', f"keys = {jwk('PRODORG')}", ""]
    for spec in producers:
        lines += ["[[producers]]", f'id = "{spec.id}"', f'name = "Producent {spec.id}"',
                  'organisation = "PRODORG"', f"types = {json.dumps(spec.types)}",
                  f"own_view_types = {json.dumps(spec.own_view_types)}",
                  f"ombud_types = {json.dumps(spec.ombud_types)}",
                  "units = [" + ", ".join(f'{{ id = "{u}", name = "Enhet {u}" }}'
                                          for u in spec.units) + "]",
                  f"keys = {jwk(spec.id)}", ""]
        if spec.blocks:
            (tmp / f"blocks-{spec.id}.json").write_text(json.dumps(spec.blocks),
                                                         encoding="utf-8")
        data = tmp / "data" / spec.id
        data.mkdir(parents=True)
        for person, records in spec.records.items():
            (data / f"{person}.json").write_text(json.dumps(records), encoding="utf-8")
    text = "\n".join(lines)
    (tmp / "registry.toml").write_text(text, encoding="utf-8")
    (tmp / "broker.jwk").write_bytes(msgspec.json.encode(keys["broker"].to_jwk()))
    return Federation(tmp=tmp, server=server, prefix=prefix, registry=parse_registry(text),
                      keys=keys, producers={p.id: p for p in producers})


@asynccontextmanager
async def federations(
    tmp_path: Path, server: MqttServer, prefix: str, *,
    timeout: aiohttp.ClientTimeout | None = None,
) -> AsyncIterator[Callable[[Sequence[ProducerSpec]], Awaitable[Federation]]]:
    """Builds federations on ``server``; on exit stops whatever in-process part they ran.

    ``timeout`` bounds each request of a federation's ``http`` session (aiohttp's default
    when None).
    """
    made: list[Federation] = []

    async def make(producers: Sequence[ProducerSpec]) -> Federation:
        fed = build_federation(tmp_path, server, prefix, producers)
        fed.http = (aiohttp.ClientSession() if timeout is None
                    else aiohttp.ClientSession(timeout=timeout))
        made.append(fed)
        return fed

    try:
        yield make
    finally:
        for fed in made:
            for pid in list(fed.adapters):
                await fed.stop_adapters(pid)
            fed.shutdown.set()
            for task in fed.tasks:
                await asyncio.wait_for(task, 10)
            if fed.http:
                await fed.http.close()


@pytest.fixture
async def federation_factory(
    tmp_path: Path, mqtt_server: MqttServer, unique_prefix: str,
) -> AsyncIterator[Any]:
    async with federations(tmp_path, mqtt_server, unique_prefix) as make:
        yield make


def elapsed_since(t0: float) -> float:
    return time.monotonic() - t0


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Wait for ``condition`` (checked every 10 ms) instead of sleeping a fixed time; a
    failure says what never happened."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"within {timeout} s: {what}")
