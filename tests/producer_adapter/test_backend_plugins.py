"""Backends from plugins: an entry point in the group ``samsvar.backends`` names the class.

Each test installs a real (tiny) distribution into a directory of its own on ``sys.path``:
a ``*.dist-info`` with ``METADATA`` and ``entry_points.txt``, found by
``importlib.metadata`` exactly as an installed wheel would be.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from producer_adapter import load_stores_config, open_adapter
from producer_adapter.backends import (
    ENTRY_POINT_GROUP,
    BackendResult,
    JsonDirBackend,
    RecordBackend,
    check_backend_table,
    open_backend,
)
from producer_adapter.errors import AdapterConfigError
from schemas.messages import Period
from schemas.records import Medication, OrgRef, Record, RecordSource, UnitRef
from schemas.registry import Registry
from tests.producer_adapter.test_adapter_daemon import (
    broker,
    collect_replies,
    publish_question,
    running,
)
from transport.settings import MqttSettings

HERE = f"{__name__}"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "producers.md"


class CountingBackend:
    """A plugin backend: ``count`` medication records for every person, newest first."""

    def __init__(self, *, producer_id: str, count: int, limit: int) -> None:
        self.producer_id, self.count, self.limit = producer_id, count, limit
        self.closed = False

    @classmethod
    def check_config(cls, table: Mapping[str, Any]) -> None:
        if not isinstance(table.get("count"), int):
            raise ValueError("[backend] count must be an integer")  # the contract

    @classmethod
    async def open(cls, table: Mapping[str, Any], *, base: Path,
                   producer_id: str) -> RecordBackend:
        return cls(producer_id=producer_id, count=table["count"],
                   limit=table.get("max_records_per_type", 100))

    async def fetch(self, subject: str, types: frozenset[str], period: Period | None
                    ) -> BackendResult:
        if "medication" not in types:
            return BackendResult()
        source = RecordSource(producer=self.producer_id,
                              organisation=OrgRef(id="SE2321000999-RE01", name="Region"),
                              unit=UnitRef(id="SE2321000999-U100", name="Vårdcentralen"))
        records: list[Record] = [
            Medication(id=f"plugin-{i}", source=source, scope="hsl", drug=f"Läkemedel {i}",
                       time=dt.datetime(2024, 1, 1, tzinfo=dt.UTC) - dt.timedelta(days=i))
            for i in range(self.count)
        ]
        return BackendResult(records=records[:self.limit], truncated=len(records) > self.limit)

    async def aclose(self) -> None:
        self.closed = True


NOT_A_FACTORY = object()


def install(site: Path, monkeypatch: pytest.MonkeyPatch, entries: Mapping[str, str], *,
            dist: str | None = None) -> str:
    """A distribution in ``site`` (put on sys.path) whose entry points are ``entries``."""
    name = dist or f"samsvar_test_plugin_{uuid.uuid4().hex[:8]}"
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
                                   encoding="utf-8")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    return name


@pytest.fixture
def plugin_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    kind = f"counting_{uuid.uuid4().hex[:6]}"
    install(tmp_path / "site", monkeypatch, {kind: f"{HERE}:CountingBackend"})
    return kind


async def test_open_backend_uses_the_plugin(plugin_kind: str, tmp_path: Path) -> None:
    table = {"kind": plugin_kind, "count": 3}
    backend = await open_backend(table, base=tmp_path, producer_id="P1")
    assert isinstance(backend, CountingBackend)
    result = await backend.fetch("195001182046", frozenset({"medication"}), None)
    assert [r.id for r in result.records] == ["plugin-0", "plugin-1", "plugin-2"]
    assert result.records[0].source.producer == "P1"


def test_the_plugin_checks_its_own_table(plugin_kind: str) -> None:
    check_backend_table({"kind": plugin_kind, "count": 1})
    with pytest.raises(AdapterConfigError, match=r"^a.toml: \[backend\] count must be an int"):
        check_backend_table({"kind": plugin_kind, "count": "many"}, where="a.toml")


async def test_a_plugin_cannot_replace_a_built_in_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path, kit: Any
) -> None:
    install(tmp_path / "site", monkeypatch, {"json_dir": f"{HERE}:CountingBackend"})
    table = {"kind": "json_dir", "path": data_dir.name}
    backend = await open_backend(table, base=data_dir.parent, producer_id=kit.PRODUCER)
    assert isinstance(backend, JsonDirBackend)


@pytest.mark.parametrize(
    "target, message",
    [
        ("samsvar_no_such_module_xyz:Backend",
         r"cannot be loaded: ModuleNotFoundError: No module named 'samsvar_no_such_module_xyz'"),
        (f"{HERE}:NoSuchClass", r"cannot be loaded: AttributeError"),
        (f"{HERE}:NOT_A_FACTORY", r"has no open\(table, \*, base, producer_id\) method"),
    ],
)
def test_a_broken_plugin_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str,
                                  message: str) -> None:
    dist = install(tmp_path / "site", monkeypatch, {"broken": target})
    with pytest.raises(AdapterConfigError) as err:
        check_backend_table({"kind": "broken"}, where="a.toml")
    assert re.search(message, str(err.value))
    assert str(err.value).startswith(f"a.toml: [backend] kind 'broken': plugin broken = {target}"
                                     f" (from {dist} 1.0)")


def test_two_plugins_of_one_name_are_refused(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path / "a", monkeypatch, {"twice": f"{HERE}:CountingBackend"})
    install(tmp_path / "b", monkeypatch, {"twice": f"{HERE}:NOT_A_FACTORY"})
    with pytest.raises(AdapterConfigError, match=r"kind 'twice' is named by several plugins"):
        check_backend_table({"kind": "twice"})


def test_an_unknown_kind_lists_the_built_in_ones() -> None:
    with pytest.raises(AdapterConfigError,
                       match=r"kind 'nosuch' is neither built in \(fhir, json_dir, rivta, sql\) "
                             r"nor an installed plugin \(entry point group 'samsvar.backends'\)"):
        check_backend_table({"kind": "nosuch"})


# -- through the adapter, from its config file --------------------------------------------

@pytest.fixture
def settings(mqtt_server: Any, unique_prefix: str) -> MqttSettings:
    return mqtt_server.settings(unique_prefix)  # type: ignore[no-any-return]


async def test_the_adapter_runs_a_plugin_from_its_config_and_says_truncated(
    plugin_kind: str, tmp_path: Path, settings: MqttSettings, keys: Any, kit: Any,
    registry: Registry,
) -> None:
    config = kit.write_adapter_dir(tmp_path, keys, settings)
    text = config.read_text(encoding="utf-8").replace(
        'kind = "json_dir"\npath = "data/SE2321000999-P001"',
        f'kind = "{plugin_kind}"\ncount = 5\nmax_records_per_type = 2')
    config.write_text(text, encoding="utf-8")
    load_stores_config(config).block_register().create()  # `samsvar adapter block init`
    adapter = open_adapter(config)
    q = kit.make_question(prefix=settings.prefix, types=["medication"])
    async with running(adapter), broker(settings) as b:
        await publish_question(b, settings, kit, kit.sign_question(q, keys.broker))
        [reply] = await collect_replies(b, registry, kit, count=1, prefix=settings.prefix)
    assert reply.status == "ok" and reply.truncated is True
    assert [r.id for r in reply.records] == ["plugin-0", "plugin-1"]


# -- the example in docs/producers.md works as printed -------------------------------------

def _docs_plugin() -> str:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Writing a backend plugin", 1)[1]
    blocks: list[str] = re.findall(r"```python\n(.+?)\n```", section, flags=re.DOTALL)
    return blocks[0]


async def test_the_documented_plugin_works(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    source = _docs_plugin()
    assert len(source.splitlines()) <= 40
    module = f"samsvar_docs_plugin_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{module}.py").write_text(source, encoding="utf-8")
    entry = re.search(r'^(\w+) = "samsvar_csv_backend:(\w+)"',
                      DOCS.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert entry is not None, "the docs show the entry point"
    install(site, monkeypatch, {"csv_test": f"{module}:{entry.group(2)}"})
    (tmp_path / "journal.csv").write_text(
        "person,id,time,drug,scope,unit_id,unit_name\n"
        "195001182046,r1,2024-03-01T10:00:00+01:00,Alvedon 500 mg,hsl,SE2321000999-U100,"
        "Vårdcentralen\n"
        "195001182046,r2,2023-03-01T10:00:00+01:00,\"Waran 2,5 mg\",hsl,SE2321000999-U100,"
        "Vårdcentralen\n"
        "195001182061,r3,2024-03-01T10:00:00+01:00,Furix 40 mg,hsl,SE2321000999-U100,"
        "Vårdcentralen\n", encoding="utf-8")
    table = {"kind": "csv_test", "path": "journal.csv", "organisation": "SE2321000999-RE01"}
    backend = await open_backend(table, base=tmp_path, producer_id="P1")
    try:
        result = await backend.fetch("195001182046", frozenset({"medication"}),
                                     Period(from_=dt.date(2024, 1, 1)))
    finally:
        await backend.aclose()
    assert [type(r) for r in result.records] == [Medication]
    assert [(r.id, r.drug) for r in result.records
            if isinstance(r, Medication)] == [("r1", "Alvedon 500 mg")]
    with pytest.raises(AdapterConfigError, match="path"):
        check_backend_table({"kind": "csv_test"})
