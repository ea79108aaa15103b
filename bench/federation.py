"""A benchmark federation on disk: keys, a registry of N producers, broker configs.

One federation serves every scenario: the fan-out of a query is chosen by the information
type it asks for, because producers serve nested sets of types (see :data:`FANOUT`):

==========  ================================  ====================
fan-out     type asked                        producers
==========  ================================  ====================
1           ``lab_results``                   the first one
5           ``care_contacts``                 the first 5
10          ``alerts``                        the first 10
100         ``diagnoses``                     the first 100
N (all)     ``medication``                    every producer
5, hangs    ``care_plans``                    the first 5, whose backend never answers
==========  ================================  ====================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import msgspec

from schemas.jose import PrivateKey, generate_key, sign
from schemas.messages import QUESTION_TYP, REPLY_TYP, Consumer, Question, Reply, User
from schemas.records import InfoType, OrgRef, UnitRef

from .backend import HANG_TYPE, build_records

__all__ = ["BROKER_ID", "CONSUMER", "FANOUT", "Federation", "build", "fanout_type"]

BROKER_ID = "SE0000000000-BENCH"
CONSUMER = "SE2321000999-RE01"
PRODUCER_ORG = "SE2321000999-PORG"
SUBJECT = "193803039142"  # Skatteverket's test personnummer
_NESTED = (("lab_results", 1), ("care_contacts", 5), ("alerts", 10), ("diagnoses", 100))
FANOUT = {n: t for t, n in _NESTED}
"""Fan-out → the type whose query reaches exactly that many producers (N: ``medication``)."""
REPLY_TARGET_BYTES = 2048


def fanout_type(n: int, total: int) -> str:
    if n == total:
        return "medication"
    if n in FANOUT and n <= total:
        return FANOUT[n]
    raise ValueError(f"no type fans out to {n} of {total} producers")


def producer_id(i: int) -> str:
    return f"SE2321000999-P{i:03d}"


def producer_types(i: int) -> list[str]:
    types = ["medication"] + [t for t, n in _NESTED if i < n]
    if i < 5:
        types.append(HANG_TYPE)
    return types


@dataclass(frozen=True, kw_only=True)
class Federation:
    root: Path
    total: int
    mqtt_port: int
    prefix: str
    pad: int
    """Characters of padding per record so a signed reply is ~2 KB."""
    reply_bytes: int
    question_bytes: int

    @property
    def registry(self) -> Path:
        return self.root / "registry.toml"

    @property
    def consumer_key(self) -> Path:
        return self.root / "keys" / f"{CONSUMER}.jwk"

    def group_spec(self, group: int, groups: int) -> Path:
        """The JSON file a producer group process reads: its producers and their keys."""
        ids = [i for i in range(self.total) if i % groups == group]
        path = self.root / f"producers-{group}.json"
        path.write_text(json.dumps({
            "registry": str(self.registry),
            "mqtt_port": self.mqtt_port, "prefix": self.prefix, "pad": self.pad,
            "producers": [{"id": producer_id(i),
                           "key": str(self.root / "keys" / f"{producer_id(i)}.jwk")}
                          for i in ids],
        }), encoding="utf-8")
        return path

    def broker_config(self, name: str, *, port: int, log: str = "sqlite",
                      dsn: str | None = None, schema: str | None = None) -> Path:
        """A broker.toml; limits raised so 10,000 queries can be in flight (memory scenario)."""
        if log == "sqlite":
            access = ['kind = "sqlite"', f'path = "{name}-access-log.db"']
        else:
            access = ['kind = "postgresql"', f'dsn = "{dsn}"', f'schema = "{schema}"']
        path = self.root / f"{name}.toml"
        path.write_text("\n".join([
            "[broker]", 'registry = "registry.toml"', 'key = "keys/broker.jwk"',
            'instance = "bench"', f'listen = "127.0.0.1:{port}"',
            "max_deadline_ms = 180000", "max_in_flight = 20000",
            "max_in_flight_per_consumer = 20000", "",
            "[mqtt]", f'url = "mqtt://127.0.0.1:{self.mqtt_port}"', f'prefix = "{self.prefix}"',
            "",
            "[access_log]", *access, "",
        ]), encoding="utf-8")
        return path


def _jwk_inline(key: PrivateKey) -> str:
    public = key.public.to_jwk()
    return "[{ " + ", ".join(f'{k} = "{v}"' for k, v in public.items()) + " }]"


def _write_key(root: Path, name: str, key: PrivateKey) -> None:
    (root / "keys" / f"{name}.jwk").write_bytes(msgspec.json.encode(key.to_jwk()))


def _calibrate(key: PrivateKey, pid: str) -> tuple[int, int]:
    """The padding that makes a signed ``ok`` reply closest to 2 KB, and that size."""
    def size(pad: int) -> int:
        reply = Reply(query_id="00000000-0000-0000-0000-000000000000", producer=pid,
                      status="ok", records=build_records(pid, "medication", pad))
        return len(sign(msgspec.json.encode(reply), key, typ=REPLY_TYP))

    lo, hi = 0, 4000
    while lo < hi:
        mid = (lo + hi) // 2
        if size(mid) < REPLY_TARGET_BYTES:
            lo = mid + 1
        else:
            hi = mid
    return lo, size(lo)


def signed_question(key: PrivateKey, *, reply_topic: str, query_id: str, iat: int,
                    deadline: int, types: list[InfoType]) -> bytes:
    """A question as the broker signs it, from the bench's consumer about its subject."""
    q = Question(query_id=query_id, broker=BROKER_ID, reply_topic=reply_topic, iat=iat,
                 deadline=deadline,
                 consumer=Consumer(organisation=OrgRef(id=CONSUMER, name="Region Exempel"),
                                   kind="vårdgivare", user=bench_user()),
                 subject=SUBJECT, types=types, basis="consent")
    return sign(msgspec.json.encode(q), key, typ=QUESTION_TYP).encode("ascii")


def _question_bytes(key: PrivateKey, prefix: str) -> int:
    """The size of a real signed question (what the raw baseline sends)."""
    return len(signed_question(key, reply_topic=f"{prefix}/r/bench",
                               query_id="00000000-0000-0000-0000-000000000000",
                               iat=1_700_000_000, deadline=1_700_000_005_000,
                               types=["care_contacts"]))


def bench_user() -> User:
    return User(id="SE2321000999-ANLI", name="Anna Lind", role="Läkare",
                unit=UnitRef(id="SE2321000999-U100", name="Akutmottagningen"))


def build(root: Path, *, total: int, mqtt_port: int, prefix: str) -> Federation:
    """Write keys, the registry and the producers' specs under ``root``."""
    (root / "keys").mkdir(parents=True, exist_ok=True)
    broker_key = generate_key()
    consumer_key = generate_key()
    org_key = generate_key()
    _write_key(root, "broker", broker_key)
    _write_key(root, CONSUMER, consumer_key)
    lines = ["[broker]", f'id = "{BROKER_ID}"', f"keys = {_jwk_inline(broker_key)}", "",
             "[[participants]]", f'id = "{CONSUMER}"', 'name = "Region Exempel"',
             'kind = "vårdgivare"', 'roles = ["consumer"]', f"keys = {_jwk_inline(consumer_key)}",
             "", "[[participants]]", f'id = "{PRODUCER_ORG}"', 'name = "Producenter"',
             'kind = "vårdgivare"', 'roles = ["producer"]', f"keys = {_jwk_inline(org_key)}", ""]
    first_key: PrivateKey | None = None
    for i in range(total):
        key = generate_key()
        first_key = first_key or key
        pid = producer_id(i)
        _write_key(root, pid, key)
        lines += ["[[producers]]", f'id = "{pid}"', f'name = "Producent {i}"',
                  f'organisation = "{PRODUCER_ORG}"', f"types = {json.dumps(producer_types(i))}",
                  'units = [{ id = "SE2321000999-U1", name = "Enhet 1" }]',
                  f"keys = {_jwk_inline(key)}", ""]
    (root / "registry.toml").write_text("\n".join(lines), encoding="utf-8")
    assert first_key is not None
    pad, reply_bytes = _calibrate(first_key, producer_id(0))
    return Federation(root=root, total=total, mqtt_port=mqtt_port, prefix=prefix, pad=pad,
                      reply_bytes=reply_bytes,
                      question_bytes=_question_bytes(broker_key, prefix))
