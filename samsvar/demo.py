"""``samsvar demo``: the whole federation in one process (SPEC section 8).

It writes a complete federation into a work directory — registry, keys, producers' data
and configs, README.txt and demo.json — starts an MQTT server (the embedded amqtt one
unless ``--mqtt`` names another), the broker and four producer adapters (one reads a RIV-TA
producer stub over mutual TLS: :mod:`samsvar.demo_rivta`), and then either
asks one sample question and prints the answer, or keeps serving (``--serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import shutil
import signal
import socket
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import msgspec
from rich.console import Console

from broker import BrokerServer, load_broker_config
from consumer_client import Client
from consumer_client.portal import DemoRegister, PortalConfig, running_portal
from consumer_client.render import render_answer
from producer_adapter import Adapter, BlockScope, SqliteBlockRegister, load_adapter_config
from schemas.jose import PrivateKey, generate_key, load_private_key
from schemas.messages import User
from schemas.records import UnitRef
from schemas.registry import load_registry
from transport.settings import MqttSettings

from . import demo_rivta
from .common import write_private_jwk
from .demo_own import (
    CHILD_GUARDIANS,
    CHILD_TAGS,
    OWN_PERSONS,
    OWN_VIEW_TYPES_BY_PRODUCER,
    RELEASE_DELAYS,
    SWEDEN,
    own_records,
)

__all__ = ["JSON_DIR_PRODUCERS", "PARTICIPANTS", "PRODUCERS", "build_workdir", "portal_config",
           "run_demo"]

BROKER_ID: Final = "SE0000000000-SAMSVAR"

PARTICIPANTS: Final[list[dict[str, Any]]] = [
    {"id": "SE2321000999-RE01", "name": "Region Exempel", "kind": "vårdgivare",
     "roles": ["consumer", "producer"]},
    {"id": "SE2120009999-EK01", "name": "Exempel kommun", "kind": "omsorgsgivare",
     "roles": ["consumer", "producer"]},
    {"id": "SE5560000000-INV1", "name": "Exempel invånartjänst (e-tjänst för invånare)",
     "kind": "annan", "roles": ["citizen-portal", "log-extract"]},
]

PRODUCERS: Final[list[dict[str, Any]]] = [
    {"id": "SE2321000999-P001", "name": "Region Exempel", "organisation": "SE2321000999-RE01",
     "types": ["medication", "diagnoses", "alerts", "lab_results", "care_documentation",
               "care_contacts", "care_plans", "bookings", "fixed_contacts", "self_care"],
     "units": [["SE2321000999-U100", "Akutmottagningen, Exempelsjukhuset"],
               ["SE2321000999-U200", "Vårdcentralen Exempelby"],
               ["SE2321000999-U300", "Medicinkliniken, Exempelsjukhuset"],
               ["SE2321000999-U400", "Barn- och ungdomsmedicin, Exempelsjukhuset"],
               ["SE2321000999-U900", "Psykiatriska kliniken, Exempelsjukhuset"]],
     "excluded_units": ["SE2321000999-U900"]},
    {"id": "SE2120009999-VO01", "name": "Exempel kommun vård och omsorg",
     "organisation": "SE2120009999-EK01",
     "types": ["medication", "care_documentation", "functional_status",
               "social_care_interventions", "care_plans", "bookings", "fixed_contacts",
               "self_care"],
     "units": [["SE2120009999-U110", "Hemsjukvården Exempel"],
               ["SE2120009999-U120", "Hemtjänsten Norra"],
               ["SE2120009999-U130", "Biståndsenheten äldreomsorg"],
               ["SE2120009999-U140", "Särskilt boende Solgården"],
               ["SE2120009999-U190", "Individ- och familjeomsorgen"]],
     "excluded_units": []},
    {"id": "SE2120009999-LSS1", "name": "Exempel kommun LSS", "organisation": "SE2120009999-EK01",
     "types": ["social_care_interventions", "care_documentation", "care_plans",
               "functional_status"],
     "units": [["SE2120009999-U210", "LSS-handläggning"],
               ["SE2120009999-U220", "Daglig verksamhet Verkstan"],
               ["SE2120009999-U230", "Gruppbostad Linden"]],
     "excluded_units": []},
    demo_rivta.PRODUCER,  # "backend": "rivta": its records come from a RIV-TA stub over mTLS
]

JSON_DIR_PRODUCERS: Final = [p for p in PRODUCERS if p.get("backend", "json_dir") == "json_dir"]
"""The producers whose records are files: all but the ``rivta`` one, which needs its stub."""

SAMPLE_SUBJECT: Final = "193803039142"
SAMPLE_TYPES: Final = ["medication", "alerts", "care_plans", "social_care_interventions"]
SAMPLE_USER: Final = User(
    id="SE2321000999-ANLI", name="Anna Lind", role="Läkare",
    unit=UnitRef(id="SE2321000999-U100", name="Akutmottagningen, Exempelsjukhuset"),
)


def workdir_tag(root: Path) -> str:
    """A short tag of the work folder: two demos on one MQTT server, in different folders,
    use different topic prefixes and broker instances, so they never collide. A folder
    the demo wrote before keeps its tag (read back from its broker.toml), so its access
    log and witnessed checkpoints stay those of one broker instance even if it is moved."""
    with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
        instance = tomllib.loads((root / "broker.toml").read_text(encoding="utf-8")).get(
            "broker", {}).get("instance", "")
        tag = instance.removeprefix("demo-") if isinstance(instance, str) else ""
        if instance.startswith("demo-") and tag.isalnum():
            return tag
    return hashlib.sha256(str(root.resolve()).encode("utf-8")).hexdigest()[:10]


def demo_prefix(root: Path) -> str:
    """The demo's MQTT topic prefix: ``samsvar-demo/<tag>/v1``."""
    return f"samsvar-demo/{workdir_tag(root)}/v1"


def demo_instance(root: Path) -> str:
    """The demo broker's instance id (its reply topic and client id): ``demo-<tag>``."""
    return f"demo-{workdir_tag(root)}"


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _toml_keys(jwk: dict[str, str]) -> str:
    public = {k: v for k, v in jwk.items() if k != "d"}
    return "[{ " + ", ".join(f"{k} = {_toml_str(v)}" for k, v in public.items()) + " }]"


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def _key(keys_dir: Path, name: str) -> PrivateKey:
    """Reuse the key already in the workdir, so consumers' copies stay valid across runs."""
    path = keys_dir / f"{name}.jwk"
    if path.exists():
        with contextlib.suppress(ValueError):
            return load_private_key(path)
    key = generate_key()  # schemas.jose.DEFAULT_ALG: the least per answer (bench)
    write_private_jwk(path, key.to_jwk())
    return key


@dataclass(frozen=True, kw_only=True)
class Workdir:
    root: Path
    broker_config: Path
    adapter_configs: list[Path]
    demo: dict[str, Any]
    rivta_port: int = 0
    """Where the RIV-TA producer stub of the ``rivta`` producer listens (mutual TLS)."""


def _data_root() -> Any:
    return resources.files("samsvar") / "demo_data"


def _write_blocks(pdir: Path, prod: dict[str, Any], data_root: Any) -> None:
    """A fresh block register for one producer, seeded from ``demo_data/blocks.json``.

    Every block there is one the person registered themselves.
    """
    for stale in ("blocks.db", "blocks.db-journal", "blocks.json"):
        (pdir / stale).unlink(missing_ok=True)
    scope = BlockScope(producer=prod["id"], organisation=prod["organisation"],
                       units=frozenset(u for u, _ in prod["units"]))
    register = SqliteBlockRegister(pdir / "blocks.db", scope=scope)
    register.create()
    for b in json.loads((data_root / "blocks.json").read_text(encoding="utf-8")):
        if b["producer"] == prod["id"]:
            register.add(subject=b["subject"], level=b["level"], target=b["target"],
                         registered_by=b["registered_by"], operator="samsvar demo",
                         note=b.get("note", ""))


def _own_view_types(prod: dict[str, Any]) -> list[str]:
    """The types a producer offers in the own view (the RIV-TA producer names its own)."""
    found: list[str] = OWN_VIEW_TYPES_BY_PRODUCER.get(prod["id"], prod.get("own_view_types", []))
    return found


def _backend_lines(prod: dict[str, Any], rivta_port: int) -> list[str]:
    if prod.get("backend") == "rivta":
        return demo_rivta.backend_toml(rivta_port)
    return ["[backend]", 'kind = "json_dir"', 'path = "data"']


def build_workdir(root: Path, *, port: int, mqtt: MqttSettings,
                  rivta_port: int | None = None, rivta: bool = True,
                  embedded: bool = False) -> Workdir:
    """Write every file the demo federation uses into ``root`` (on ``mqtt``'s servers and
    protocol, with the topic prefix of this work folder).

    ``rivta=False`` leaves out the producer (and person) that need the RIV-TA stub running.
    """
    rivta_port = rivta_port if rivta_port is not None else _free_port(avoid={port, port + 1})
    producers = PRODUCERS if rivta else JSON_DIR_PRODUCERS
    root.mkdir(parents=True, exist_ok=True)
    mqtt = dataclasses.replace(mqtt, prefix=demo_prefix(root))
    instance = demo_instance(root)
    keys_dir = root / "keys"
    keys_dir.mkdir(exist_ok=True)
    broker_key = _key(keys_dir, "broker")
    lines = ["# The federation registry of the samsvar demo (written by `samsvar demo`).", "",
             "[broker]", f"id = {_toml_str(BROKER_ID)}", 'name = "samsvar demo broker"',
             f"keys = {_toml_keys(broker_key.to_jwk())}", ""]
    participant_keys = {}
    for p in PARTICIPANTS:
        key = participant_keys[p["id"]] = _key(keys_dir, p["id"])
        lines += ["[[participants]]", f"id = {_toml_str(p['id'])}",
                  f"name = {_toml_str(p['name'])}", f"kind = {_toml_str(p['kind'])}",
                  f"roles = {_toml_list(p['roles'])}", f"keys = {_toml_keys(key.to_jwk())}", ""]
    # Credentials in the URLs are kept here, in the workdir's configs (never in a log).
    mqtt_table = [f"urls = {_toml_list(mqtt.config_urls())}", f"prefix = {_toml_str(mqtt.prefix)}",
                  f"protocol = {_toml_str(mqtt.protocol)}",
                  f"shared_subscriptions = {'true' if mqtt.shared_subscriptions else 'false'}"]
    adapter_configs = []
    data_root = _data_root()
    own = own_records(dt.datetime.now(SWEDEN).date())
    for prod in producers:
        key = _key(keys_dir, prod["id"])
        units = ", ".join(f"{{ id = {_toml_str(u)}, name = {_toml_str(n)} }}"
                          for u, n in prod["units"])
        lines += ["[[producers]]", f"id = {_toml_str(prod['id'])}",
                  f"name = {_toml_str(prod['name'])}",
                  f"organisation = {_toml_str(prod['organisation'])}",
                  f"types = {_toml_list(prod['types'])}",
                  f"own_view_types = {_toml_list(_own_view_types(prod))}",
                  f"units = [{units}]",
                  f"keys = {_toml_keys(key.to_jwk())}", ""]
        pdir = root / "producers" / prod["id"]
        data_dir = pdir / "data"
        if data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True)
        source = data_root / prod["id"]
        if source.is_dir():
            for item in source.iterdir():
                if item.name.endswith(".json"):
                    (data_dir / item.name).write_bytes(item.read_bytes())
        for person, records in own.get(prod["id"], {}).items():
            file = data_dir / f"{person}.json"
            held = json.loads(file.read_text(encoding="utf-8")) if file.exists() else []
            file.write_text(json.dumps(held + records, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
        _write_blocks(pdir, prod, data_root)
        config = pdir / "adapter.toml"
        config.write_text("\n".join([
            f"# Producer adapter for {prod['name']} (written by `samsvar demo`).",
            "[adapter]", f"producer = {_toml_str(prod['id'])}", 'registry = "../../registry.toml"',
            f"key = {_toml_str('../../keys/' + prod['id'] + '.jwk')}",
            f"excluded_units = {_toml_list(prod['excluded_units'])}", "",
            "[mqtt]", *mqtt_table, "",
            *_backend_lines(prod, rivta_port), "",
            "[blocks]", 'kind = "sqlite"', 'path = "blocks.db"', "",
            "[disclosure_log]", 'path = "disclosures.db"', "",
            "[witness]", 'path = "witness.json"', "",
            "[own_view]", 'guardian_blocks = "guardian_blocks.db"',
            "release_delay_days = {"
            + ", ".join(f"{t} = {n}" for t, n in RELEASE_DELAYS.get(prod["id"], {}).items())
            + "}", "",
        ]), encoding="utf-8")
        adapter_configs.append(config)
    (root / "registry.toml").write_text("\n".join(lines), encoding="utf-8")
    broker_config = root / "broker.toml"
    broker_config.write_text("\n".join([
        "# The demo broker (written by `samsvar demo`).", "[broker]",
        'registry = "registry.toml"', 'key = "keys/broker.jwk"',
        f"instance = {_toml_str(instance)}",
        f'listen = "127.0.0.1:{port}"', "", "[mqtt]", *mqtt_table, "",
    ]), encoding="utf-8")

    persons = [p for p in json.loads((data_root / "persons.json").read_text(encoding="utf-8"))
               if rivta or "rivta" not in p["tags"]]
    for person in persons:
        person["tags"] = person["tags"] + CHILD_TAGS.get(person["id"], [])
        if person["id"] in CHILD_GUARDIANS:
            person["guardians"] = CHILD_GUARDIANS[person["id"]]
    persons += OWN_PERSONS
    demo = {
        "aud": BROKER_ID,
        "broker_url": f"http://127.0.0.1:{port}",
        "participants": [
            {"id": p["id"], "name": p["name"], "kind": p["kind"], "roles": p["roles"],
             "kid": participant_keys[p["id"]].kid, "key_file": f"keys/{p['id']}.jwk"}
            for p in PARTICIPANTS
        ],
        "producers": [{"id": p["id"], "organisation": p["organisation"], "types": p["types"],
                       "own_view_types": _own_view_types(p),
                       "backend": p.get("backend", "json_dir")} for p in producers],
        "persons": [{"id": p["id"], "name": p["name"], "tags": p["tags"],
                     **({"guardians": p["guardians"]} if "guardians" in p else {})}
                    for p in persons],
    }
    (root / "demo.json").write_text(json.dumps(demo, indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    (root / "README.txt").write_text(
        _readme(demo, persons, mqtt, producers, embedded=embedded), encoding="utf-8")
    return Workdir(root=root, broker_config=broker_config, adapter_configs=adapter_configs,
                   demo=demo, rivta_port=rivta_port)


def _readme(demo: dict[str, Any], persons: list[dict[str, Any]], mqtt: MqttSettings,
            producers: list[dict[str, Any]], *, embedded: bool = False) -> str:
    out = [
        "samsvar demo federation",
        "=======================",
        "",
        f"Broker:   {demo['broker_url']}   (POST /v1/queries, GET /v1/producers, /healthz)",
        ("          POST /v1/own/queries: the person's own view, for the citizen-portal "
         "participant (docs/own-view.md)"),
        f"aud:      {demo['aud']}   (the broker's id: put it in every query's aud claim)",
        (f"MQTT:     {mqtt.urls} ({'embedded amqtt, demo only' if embedded else 'external'}; "
         f"MQTT {mqtt.protocol}, topics under {mqtt.prefix}/)"),
        "",
        "Participants (private keys in keys/<id>.jwk, public keys in registry.toml):",
    ]
    for p in demo["participants"]:
        out.append(f"  {p['id']}  {p['kind']:<13}  roles: {', '.join(p['roles']):<20}  {p['name']}")
    out += ["", "Producers:"]
    for p in producers:
        extra = f"  excluded units: {', '.join(p['excluded_units'])}" if p["excluded_units"] else ""
        out.append(f"  {p['id']}  {p['name']}: {', '.join(p['types'])}{extra}")
        out.append(f"      own view: {', '.join(_own_view_types(p))}"
                   + "".join(f"; {t} shown {n} days after its time"
                             for t, n in RELEASE_DELAYS.get(p["id"], {}).items()))
    out += ["", "Demo persons (Skatteverket test personnummer; never real people):"]
    for p in persons:
        out.append(f"  {p['id']}  {p['name']:<24} [{', '.join(p['tags'])}]")
        if p.get("guardians"):
            out.append(f"      guardians (vårdnadshavare): {', '.join(p['guardians'])}")
        if p.get("note"):
            out.append(f"      {p['note']}")
    out += [
        "",
        "Ask a question (in another terminal):",
        f"  samsvar query --workdir {'<this directory>'} --as SE2321000999-RE01 \\",
        f"      --subject {SAMPLE_SUBJECT} --types medication,alerts",
        "",
        "Check the broker's access log against every producer's witnessed checkpoints:",
        f"  samsvar log verify --workdir {'<this directory>'}",
        "",
        "Files: registry.toml (the federation registry), broker.toml, keys/, access-log.db",
        "(the broker's access log), producers/<id>/adapter.toml, producers/<id>/data/",
        "<personnummer>.json and producers/<id>/witness.json (the broker's checkpoints that",
        "producer has witnessed), demo.json (the same facts as this file, for programs).",
        "",
    ]
    return "\n".join(out)


def _free_port(avoid: frozenset[int] | set[int] = frozenset()) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port


async def _start_embedded_mqtt(port: int) -> Any:
    from amqtt.broker import Broker

    server = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    })
    await server.start()
    return server


async def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 on success."""
    err = Console(stderr=True)
    embedded = args.mqtt is None
    mqtt_server = None
    port = args.port if args.serve and args.port else _free_port()
    portal_port = getattr(args, "portal_port", None) or port + 1
    rivta_stub = None
    if embedded:
        # never the broker's or the portal's port: bind(0) hands out neighbouring ports
        mqtt_port = _free_port(avoid={port, portal_port})
        mqtt = MqttSettings(port=mqtt_port, protocol="3.1.1", shared_subscriptions=False)
    else:
        try:
            mqtt = MqttSettings.from_url(
                args.mqtt, protocol=getattr(args, "mqtt_protocol", "5"),
                shared_subscriptions=getattr(args, "shared_subscriptions", True))
        except ValueError as exc:
            print(f"samsvar: {exc}", file=sys.stderr)
            return 2
    tmp = None
    if args.workdir:
        root = Path(args.workdir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="samsvar-demo-")
        root = Path(tmp.name)
    try:
        # the RIV-TA stub's port: never the broker's, the portal's or the MQTT server's
        workdir = build_workdir(root, port=port, mqtt=mqtt, embedded=embedded,
                                rivta_port=_free_port(avoid={port, portal_port, mqtt.port}))
        rivta_stub = await demo_rivta.start_stub(
            root / "producers" / demo_rivta.PRODUCER["id"], workdir.rivta_port,
            _data_root() / "rivta.json", dt.date.today())
        if embedded:
            mqtt_server = await _start_embedded_mqtt(mqtt.port)
        registry = load_registry(root / "registry.toml")
        config = load_broker_config(workdir.broker_config)
        if embedded:
            config = dataclasses.replace(config, embedded_mqtt=True)
        broker = BrokerServer(config, registry=registry)
        adapters = [Adapter(load_adapter_config(path), registry)
                    for path in workdir.adapter_configs]
        shutdown = asyncio.Event()
        adapters_stop = asyncio.Event()
        if args.serve:  # from the start: an interrupt while starting up stops it cleanly too
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, shutdown.set)
        async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as tg:
            if args.serve:  # up before the broker's /healthz answers
                try:
                    await stack.enter_async_context(running_portal(
                        portal_config(workdir), host="127.0.0.1", port=portal_port))
                except OSError as exc:
                    if getattr(args, "portal_port", None):  # the port asked for: stop
                        print(f"samsvar: cannot serve Min översikt on 127.0.0.1:{portal_port}: "
                              f"{exc.strerror or exc}; choose another --portal-port",
                              file=sys.stderr)
                        return 1
                    # the default (port + 1) is some other program's: any free port will do
                    taken, portal_port = portal_port, _free_port(avoid={port, mqtt.port})
                    err.print(f"port {taken} (the broker's + 1) is taken: Min översikt uses "
                              f"{portal_port} instead (--portal-port chooses)")
                    await stack.enter_async_context(running_portal(
                        portal_config(workdir), host="127.0.0.1", port=portal_port))
            broker_task = tg.create_task(broker.run(shutdown=shutdown), name="demo-broker")
            for adapter in adapters:
                tg.create_task(adapter.run(shutdown=adapters_stop), name="demo-adapter")
            try:
                await _wait_online(broker, [p["id"] for p in PRODUCERS], shutdown)
                if args.serve:
                    await _serve(workdir, err, shutdown, portal_port=portal_port)
                else:
                    await _ask_once(workdir, args.json)
            finally:
                shutdown.set()
                # The broker signs and publishes its last checkpoint as it stops; the
                # producers witness it before they stop (SPEC section 8).
                with contextlib.suppress(Exception):
                    await asyncio.wait([broker_task], timeout=_WITNESS_WAIT_S)
                await _witnessed(broker, adapters)
                adapters_stop.set()
        return 0
    finally:
        if rivta_stub is not None:
            await rivta_stub.close()
        if mqtt_server is not None:
            await mqtt_server.shutdown()
        if tmp is not None:
            tmp.cleanup()


_WITNESS_WAIT_S: Final = 10.0
"""How long the demo waits, when stopping, for its producers to witness the last checkpoint."""


async def _witnessed(broker: BrokerServer, adapters: list[Adapter]) -> None:
    """Until every adapter holds the broker's last checkpoint (at most a few seconds)."""
    last = broker.service.access_log.last_checkpoint if broker.service.access_log else None
    if last is None or broker.published_checkpoint is None:
        return
    instance, size = broker.config.instance, last[0].seq
    def witnessed() -> bool:
        return all(a.witness is not None and (held := a.witness.latest.get(instance))
                   is not None and held.seq >= size for a in adapters)

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_WITNESS_WAIT_S):
            while not witnessed():  # noqa: ASYNC110 - a witness updates in its adapter's task
                await asyncio.sleep(0.02)


async def _wait_online(broker: BrokerServer, producers: list[str], shutdown: asyncio.Event,
                       timeout: float = 20) -> None:  # noqa: ASYNC109 - applied just below
    async with asyncio.timeout(timeout):
        # Polled, not awaited: two events (started, shutdown) either of which ends the wait,
        # then presence, which has no event of its own.
        while not broker.started.is_set() and not shutdown.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        while not shutdown.is_set() and not all(broker.service.presence.is_online(p)  # noqa: ASYNC110
                                                for p in producers):
            await asyncio.sleep(0.02)


async def _ask_once(workdir: Workdir, as_json: bool) -> None:
    demo = workdir.demo
    asker = demo["participants"][0]
    client = Client.from_files(demo["broker_url"], workdir.root / asker["key_file"], asker["id"],
                               demo["aud"], SAMPLE_USER)
    async with client:
        answer = await client.query(subject=SAMPLE_SUBJECT, types=SAMPLE_TYPES, basis="consent")
    if as_json:
        sys.stdout.write(msgspec.json.encode(answer).decode("utf-8") + "\n")
        return
    out = Console()
    out.print(f"[bold]samsvar demo[/bold] — {asker['name']} ({SAMPLE_USER.role} "
              f"{SAMPLE_USER.name}, {SAMPLE_USER.unit.name}) asks about "
              f"{SAMPLE_SUBJECT}: {', '.join(SAMPLE_TYPES)}; basis: consent\n")
    render_answer(answer, out)


def portal_config(workdir: Workdir) -> PortalConfig:
    """"Min översikt" for this federation: the demo's citizen-portal participant and key,
    and its persons (with each child's guardians) as the population register."""
    demo = workdir.demo
    portal = next(p for p in demo["participants"] if "citizen-portal" in p["roles"])
    return PortalConfig(broker_url=demo["broker_url"], issuer=portal["id"],
                        key=load_private_key(workdir.root / portal["key_file"]),
                        audience=demo["aud"], register=DemoRegister.from_demo(demo["persons"]))


async def _serve(workdir: Workdir, err: Console, shutdown: asyncio.Event, *,
                 portal_port: int) -> None:
    err.print(f"samsvar demo serving on {workdir.demo['broker_url']} — files in {workdir.root} "
              "(README.txt, demo.json). Ctrl-C stops it.")
    err.print(f"Min översikt (the demo citizen portal): http://127.0.0.1:{portal_port}/")
    await shutdown.wait()
