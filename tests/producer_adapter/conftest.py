"""Fixtures for the producer adapter: keys, a registry, records, questions."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from producer_adapter import BlockScope
from schemas.jose import PrivateKey, generate_key, sign
from schemas.messages import QUESTION_TYP, Consumer, Question, User
from schemas.records import (
    Alert,
    CareDocumentation,
    Medication,
    OrgRef,
    Record,
    RecordSource,
    SocialCareIntervention,
    UnitRef,
)
from schemas.registry import Registry, parse_registry
from transport.settings import MqttSettings

BROKER = "SE0000000000-BRK1"
ORG = "SE2321000999-RE01"
CONSUMER = "SE2321000999-KO01"
PRODUCER = "SE2321000999-P001"
OTHER_PRODUCER = "SE2321000999-P002"
UNIT = "SE2321000999-U100"
UNIT_2 = "SE2321000999-U200"
EXCLUDED_UNIT = "SE2321000999-U900"
TYPES = ("medication", "alerts", "care_documentation", "social_care_interventions")
# From Skatteverket's list of test personnummer (../shared/reference/testpersonnummer).
PERSON = "195001182046"
PERSON_2 = "195001182061"
CHILD = "201501012395"


def jwk_toml(jwk: dict[str, str]) -> str:
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in jwk.items()) + " }"


def registry_text(broker: PrivateKey, producer: PrivateKey, org: PrivateKey,
                  consumer: PrivateKey) -> str:
    types = ", ".join(f'"{t}"' for t in TYPES)
    return f"""
[broker]
id = "{BROKER}"
keys = [{jwk_toml(broker.public.to_jwk())}]

[[participants]]
id = "{ORG}"
name = "Region Exempel"
kind = "vårdgivare"
roles = ["consumer", "producer"]
keys = [{jwk_toml(org.public.to_jwk())}]

[[participants]]
id = "{CONSUMER}"
name = "Exempel kommun"
kind = "omsorgsgivare"
roles = ["consumer"]
keys = [{jwk_toml(consumer.public.to_jwk())}]

[[producers]]
id = "{PRODUCER}"
name = "Region Exempel, journal"
organisation = "{ORG}"
types = [{types}]
units = [{{ id = "{UNIT}", name = "Vårdcentralen" }}, {{ id = "{UNIT_2}", name = "Akuten" }}]
keys = [{jwk_toml(producer.public.to_jwk())}]

[[producers]]
id = "{OTHER_PRODUCER}"
name = "Region Exempel, labb"
organisation = "{ORG}"
types = ["lab_results"]
keys = [{{ kid = "{org.kid}" }}]
"""


class Keys:
    def __init__(self) -> None:
        self.broker = generate_key()
        self.producer = generate_key("ES256")
        self.org = generate_key()
        self.consumer = generate_key()
        self.stranger = generate_key()


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="session")
def registry(keys: Keys) -> Registry:
    return parse_registry(registry_text(keys.broker, keys.producer, keys.org, keys.consumer))


@pytest.fixture
def scope(registry: Registry) -> BlockScope:
    """The test producer's block scope (both block registers' tests)."""
    return BlockScope.of(registry.producers[PRODUCER])


def source(unit: str = UNIT, *, producer: str = PRODUCER, org: str = ORG) -> RecordSource:
    return RecordSource(producer=producer, organisation=OrgRef(id=org, name="Region Exempel"),
                        unit=UnitRef(id=unit, name=f"Enhet {unit[-4:]}"), system="TestJournal")


def medication(rid: str = "m1", *, unit: str = UNIT, scope: str = "hsl",
               time: str = "2024-03-01T10:00:00+01:00", **kw: Any) -> Medication:
    return Medication(id=rid, source=source(unit, **kw), time=dt.datetime.fromisoformat(time),
                      scope=scope, drug="Alvedon 500 mg")  # type: ignore[arg-type]


def alert(rid: str = "a1", *, unit: str = UNIT, scope: str = "hsl",
          time: str = "2023-05-01T08:00:00+02:00", care_process: str | None = None) -> Alert:
    return Alert(id=rid, source=source(unit), time=dt.datetime.fromisoformat(time),
                 scope=scope, category="allergy", description="Penicillinallergi",  # type: ignore[arg-type]
                 care_process=care_process)


def note(rid: str = "n1", *, unit: str = UNIT, scope: str = "hsl",
         time: str = "2024-01-15T09:00:00+01:00", care_process: str | None = None,
         org: str = ORG) -> CareDocumentation:
    return CareDocumentation(id=rid, source=source(unit, org=org),
                             time=dt.datetime.fromisoformat(time), scope=scope,  # type: ignore[arg-type]
                             title="Besöksanteckning", text="Hemlig text",
                             care_process=care_process)


def intervention(rid: str = "s1", *, scope: str = "sol_elderly", unit: str = UNIT_2,
                 time: str = "2024-02-01T00:00:00+01:00") -> SocialCareIntervention:
    return SocialCareIntervention(id=rid, source=source(unit), time=dt.datetime.fromisoformat(time),
                                  scope=scope, intervention="Hemtjänst",  # type: ignore[arg-type]
                                  legal_basis="SoL 4 kap. 1 §", phase="beslut")


def write_person(directory: Path, person: str, records: list[Record]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / f"{person}.json"
    file.write_bytes(msgspec.json.encode(records))
    return file


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """One producer's data: PERSON has records of every kind the rules care about."""
    d = tmp_path / "data" / PRODUCER
    write_person(d, PERSON, [
        medication("m1"),
        alert("a1"),
        note("n-sol-other", scope="sol_other"),
        note("n-excluded", unit=EXCLUDED_UNIT),
        intervention("s1"),
    ])
    write_person(d, PERSON_2, [note("n-blocked", unit=UNIT_2)])
    return d


def make_question(
    *,
    prefix: str = "samsvar/v1",
    subject: str = PERSON,
    types: list[str] | None = None,
    deadline_in: float = 5.0,
    iat: int | None = None,
    **overrides: Any,
) -> Question:
    now = time.time()
    fields: dict[str, Any] = {
        "query_id": uuid.uuid4().hex,
        "broker": BROKER,
        "reply_topic": f"{prefix}/r/test-broker",
        "iat": int(now) if iat is None else iat,
        "deadline": int((now + deadline_in) * 1000),
        "consumer": Consumer(
            organisation=OrgRef(id=ORG, name="Region Exempel"),
            kind="vårdgivare",
            user=User(id="SE2321000999-E001", name="Doktor Test", role="läkare",
                      unit=UnitRef(id=UNIT_2, name="Akuten")),
        ),
        "subject": subject,
        "types": list(TYPES) if types is None else types,
        "basis": "consent",
    }
    fields.update(overrides)
    return Question(**fields)


def sign_question(q: Question, key: PrivateKey) -> str:
    return sign(msgspec.json.encode(q), key, typ=QUESTION_TYP)


@pytest.fixture
def question() -> Callable[..., Question]:
    return make_question


def adapter_config_kwargs(keys: Keys, settings: MqttSettings) -> dict[str, Any]:
    return {"producer": PRODUCER, "key": keys.producer, "mqtt": settings,
            "excluded_units": frozenset({EXCLUDED_UNIT})}


def write_key(path: Path, key: PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(key.to_jwk()))


@pytest.fixture
def kit() -> Any:
    """This module: constants and builders, reachable from tests in any import mode."""
    return sys.modules[__name__]


ADAPTER_TOML = """
[adapter]
producer = "{producer}"
registry = "registry.toml"
key = "keys/{producer}.jwk"
excluded_units = ["{excluded}"]
replica = "a"

[mqtt]
url = "mqtt://127.0.0.1:{port}"
prefix = "{prefix}"
protocol = "{protocol}"
shared_subscriptions = false

[backend]
kind = "json_dir"
path = "data/{producer}"

[blocks]
kind = "sqlite"
path = "blocks.db"
lock_timeout = 0.2
"""


def write_adapter_dir(root: Path, keys: Keys, settings: MqttSettings | None = None) -> Path:
    """A registry, the producer's key and an ``adapter.toml`` with an SQLite block register;
    the config's path. The records are the ``data_dir`` fixture's (``root/data/...``)."""
    settings = settings or MqttSettings(port=18830, protocol="3.1.1")
    (root / "registry.toml").write_text(
        registry_text(keys.broker, keys.producer, keys.org, keys.consumer), encoding="utf-8")
    write_key(root / "keys" / f"{PRODUCER}.jwk", keys.producer)
    config = root / "adapter.toml"
    config.write_text(ADAPTER_TOML.format(
        producer=PRODUCER, excluded=EXCLUDED_UNIT, port=settings.port, prefix=settings.prefix,
        protocol=settings.protocol), encoding="utf-8")
    return config
