"""A record backend over a producer's RIV-TA service contracts (SOAP/XML over mutual TLS).

A region or provider that already answers the national patient overview (NPÖ) through its
RIV-TA producers joins by configuration::

    [backend]
    kind = "rivta"
    logical_address = "SE2321000016-ABCD"      # the source system's HSA-id (LogicalAddress)
    consumer_hsa_id = "SE2321000016-SAMS"      # x-rivta-original-serviceconsumer-hsaid
    organisation = { id = "SE2321000016-0001", name = "Region Exempel" }  # the care giver
    system = "Journalsystemet"                 # source.system (optional)
    ca = "tls/ca.pem"                          # the producers' (or platform's) CA bundle
    cert = "tls/siths-function.pem"            # the client certificate (SITHS function)
    key = "tls/siths-function.key"
    timeout_s = 8                              # the whole question, every call and page
    max_pages = 20                             # 3.x hasMore: pages followed before truncating
    timezone = "Europe/Stockholm"              # RIV-TA times carry no offset (default)
    scope = "hsl"                              # the marking of every record (default "hsl")
    care_givers = { "SE2321000016-0001" = "Region Exempel" }   # names of care givers (opt.)
    units = { "SE2321000016-7P3B" = "Vårdcentralen Exempel" }  # unit names when not sent
    validate_responses = false                 # true: a response the XSD refuses is an error

    [backend.contracts]                        # one per type: contract, version, endpoint
    care_documentation = { contract = "GetCareDocumentation", version = "3.0",
                           endpoint = "https://rtp.example/GetCareDocumentation/3/rivtabp21" }
    diagnoses = { contract = "GetDiagnosis", version = "2.0", endpoint = "https://…" }

One question sets one ``x-skltp-correlation-id`` on every call it makes; calls for different
types run concurrently, the pages of a 3.x contract one after another. Each request is built
from and validated against the contract's schema, and each response parsed (and, with
``validate_responses = true``, validated), in a worker thread, never on the event loop.
``resultCode`` ERROR, a SOAP fault (e.g. the platform's VP007, authorization
missing), an HTTP error, an unreadable body or the timeout make the whole question the
source's error: no records are returned from a partial read. INFO is logged and its records
kept. A nullified record is dropped; ``approvedForPatient`` is kept on every record.

RIV-TA producers do not withhold blocked records: the adapter applies its block register
and excluded units to everything this backend returns (as for every backend).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

import aiohttp
import msgspec
import structlog
import xmlschema
from yarl import URL

from schemas.messages import Period
from schemas.records import INFORMATION_TYPES, OrgRef, Record, UnitRef

from ..errors import AdapterConfigError, BackendError
from . import _rivta_map as rmap
from ._common import RECORD_CLASSES, check_keys, named_ref, positive, zone
from ._rivta_xml import CONTRACTS, Contract, Fault, build, envelope, load_schema, read_envelope
from .base import BackendResult, RecordBackend, in_period

__all__ = ["RivtaBackend", "RivtaConfig", "RivtaContract"]

_KEYS: Final = frozenset({
    "kind", "logical_address", "consumer_hsa_id", "organisation", "system", "ca", "cert",
    "key", "timeout_s", "max_pages", "timezone", "scope", "care_givers", "units", "contracts",
    "validate_responses",
})
_CONTRACT_KEYS: Final = frozenset({"contract", "version", "endpoint"})
_SCOPES: Final = ("hsl", "sol_elderly", "sol_disability", "lss", "sol_other")
PERSON_ID_ROOT: Final = "1.2.752.129.2.1.3.1"
"""The OID of the Swedish personnummer (samordningsnummer: ``.3``)."""
COORDINATION_ID_ROOT: Final = "1.2.752.129.2.1.3.3"


@dataclass(frozen=True, kw_only=True)
class RivtaContract:
    """One type's contract: which version, and where its producer answers."""

    info_type: str
    contract: Contract
    endpoint: str


@dataclass(frozen=True, kw_only=True)
class RivtaConfig:
    logical_address: str
    consumer_hsa_id: str
    organisation: OrgRef
    contracts: tuple[RivtaContract, ...]
    system: str = ""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    timeout_s: float = 8.0
    max_pages: int = 20
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Stockholm"))
    scope: str = "hsl"
    care_givers: Mapping[str, str] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    validate_responses: bool = False

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> RivtaConfig:
        check_keys(table, _KEYS)
        strings = {}
        for key in ("logical_address", "consumer_hsa_id"):
            value = table.get(key)
            if not isinstance(value, str) or not value.strip():
                raise AdapterConfigError(f"[backend] {key} must be a non-empty HSA-id")
            strings[key] = value.strip()
        organisation = named_ref(table.get("organisation"), "organisation", OrgRef)
        if organisation is None:
            raise AdapterConfigError(
                '[backend] organisation = { id = "…", name = "…" } is required: the care giver')
        files: dict[str, str | None] = {}
        for key in ("ca", "cert", "key", "system"):
            value = table.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise AdapterConfigError(f"[backend] {key} must be a non-empty string")
            files[key] = value
        if (files["cert"] is None) != (files["key"] is None):
            raise AdapterConfigError("[backend] cert and key go together (mutual TLS)")
        scope = table.get("scope", "hsl")
        if scope not in _SCOPES:
            raise AdapterConfigError(f"[backend] scope must be one of {', '.join(_SCOPES)}")
        names: dict[str, dict[str, str]] = {}
        for key in ("care_givers", "units"):
            value = table.get(key, {})
            if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
                raise AdapterConfigError(f'[backend] {key} must be {{ "HSA-id" = "name", … }}')
            names[key] = dict(value)
        validate = table.get("validate_responses", False)
        if not isinstance(validate, bool):
            raise AdapterConfigError("[backend] validate_responses must be true or false")
        contracts = table.get("contracts")
        if not isinstance(contracts, Mapping) or not contracts:
            raise AdapterConfigError(
                "[backend.contracts] must name at least one type: "
                'care_documentation = { contract = "GetCareDocumentation", version = "3.0", '
                'endpoint = "https://…" }')
        found = []
        for info_type, entry in contracts.items():
            where = f"[backend.contracts] {info_type}"
            if info_type not in RECORD_CLASSES:
                raise AdapterConfigError(f"{where}: not an information type of this version "
                                         f"({', '.join(sorted(RECORD_CLASSES))})")
            if not isinstance(entry, Mapping):
                raise AdapterConfigError(
                    f"{where} must be a table {{ contract, version, endpoint }}")
            check_keys(entry, _CONTRACT_KEYS, where)
            key = f"{entry.get('contract')}-{entry.get('version')}"
            contract = CONTRACTS.get(key)
            if contract is None or contract.info_type != info_type:
                known = sorted(c.key.replace("-", " ") for c in CONTRACTS.values()
                               if c.info_type == info_type)
                raise AdapterConfigError(
                    f"{where}: {key.replace('-', ' ')!s} is not a contract for {info_type} "
                    f"(known: {', '.join(known) or 'none'})")
            endpoint = entry.get("endpoint")
            if not isinstance(endpoint, str) or not endpoint.startswith("https://"):
                raise AdapterConfigError(
                    f"{where}: endpoint must be an https:// URL (RIV-TA calls use mutual TLS)")
            found.append(RivtaContract(info_type=info_type, contract=contract, endpoint=endpoint))
        return cls(
            logical_address=strings["logical_address"],
            consumer_hsa_id=strings["consumer_hsa_id"], organisation=organisation,
            contracts=tuple(found), system=files["system"] or "", ca=files["ca"],
            cert=files["cert"], key=files["key"],
            timeout_s=positive(table, "timeout_s", 8.0, integer=False),
            max_pages=positive(table, "max_pages", 20, integer=True),
            timezone=zone(table.get("timezone", "Europe/Stockholm")), scope=scope,
            care_givers=names["care_givers"], units=names["units"],
            validate_responses=validate)


def person_id(contract: Contract, subject: str) -> dict[str, Any]:
    """The request's person element for ``subject`` in the contract's style."""
    root = COORDINATION_ID_ROOT if int(subject[6:8]) > 60 else PERSON_ID_ROOT
    if contract.id_style == "ii":
        return {"root": root, "extension": subject}
    return {"id": subject, "type": root}


def request_body(contract: Contract, subject: str, period: Period | None,
                 reference: str | None = None, *, facility: str = "") -> dict[str, Any]:
    """The request element's content (as :func:`build` takes it).

    GetSubjectOfCareSchedule names a ``healthcare_facility``: the logical address, as in
    the national examples.
    """
    if contract.id_style == "subject_of_care":
        return {"healthcare_facility": facility, "subject_of_care": subject}
    body: dict[str, Any] = {"patientId": person_id(contract, subject)}
    if period is not None and contract.key in ("GetCareDocumentation-3.0",
                                               "GetLaboratoryOrderOutcome-4.0",
                                               "GetCareContacts-3.0"):
        start = period.from_ or dt.date(1900, 1, 1)
        end = period.to or dt.date(2099, 12, 31)  # the contracts allow years 19xx-20xx
        body["datePeriod"] = {"start": start.strftime("%Y%m%d"), "end": end.strftime("%Y%m%d")}
    if reference is not None:
        body["hasMoreReference"] = reference
    return body


@dataclass
class _Page:
    records: list[Any]
    result_code: str
    detail: str
    next_reference: str | None


def _as_dict(element: ET.Element) -> Any:
    """An element as nested dicts keyed by local name (text at the leaves; a repeated
    element a list). Types are left to the mapping: a schema-driven decode took 2-5 times
    as long for a 1,000-record response."""
    children = list(element)
    if not children:
        return (element.text or "").strip()
    out: dict[str, Any] = {}
    for child in children:
        if not isinstance(child.tag, str):
            continue  # a comment or processing instruction
        name = child.tag.rsplit("}", 1)[-1]
        value = _as_dict(child)
        if name not in out:
            out[name] = value
        elif isinstance(out[name], list):
            out[name].append(value)
        else:
            out[name] = [out[name], value]
    return out


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def parse_response(contract: Contract, data: bytes, logical_address: str,
                   schema: xmlschema.XMLSchema | None = None) -> _Page | Fault:
    """Read one response (CPU-bound: call it in a thread); with ``schema``, validate it too.

    Raises ``ValueError`` (a response that is no SOAP envelope, or the schema refuses).
    """
    _, element = read_envelope(data)
    if isinstance(element, Fault):
        return element
    if element.tag != contract.response_tag:
        raise ValueError(f"unexpected response element {element.tag}")
    if schema is not None:
        error = next(iter(schema.iter_errors(element)), None)
        if error is not None:
            raise ValueError(f"the response does not validate: {error.reason}")
    parsed = _as_dict(element)
    doc: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    found = doc.get("result")
    result: dict[str, Any] = found if isinstance(found, dict) else {}
    code = str(result.get("resultCode") or "OK")
    detail = " ".join(str(result[k]) for k in ("errorCode", "subCode", "logId")
                      if result.get(k))
    reference = None
    for more in _listed(doc.get("hasMore")):
        if isinstance(more, dict) and more.get("logicalAddress") in (None, logical_address):
            reference = str(more.get("reference") or "") or None
    return _Page(records=_listed(doc.get(contract.records)), result_code=code, detail=detail,
                 next_reference=reference)


class RivtaBackend:
    """Answers a question with one call per type (and page) to the configured producers."""

    def __init__(self, config: RivtaConfig, producer_id: str, *,
                 schemas: Mapping[str, xmlschema.XMLSchema],
                 session: aiohttp.ClientSession, ssl_context: ssl.SSLContext | bool) -> None:
        self.config = config
        self.producer_id = producer_id
        self._schemas = schemas
        self._session = session
        self._ssl = ssl_context
        self._log = structlog.get_logger("samsvar.adapter.backend").bind(
            backend="rivta", producer=producer_id)

    @classmethod
    def check_config(cls, table: Mapping[str, Any]) -> None:
        RivtaConfig.from_table(table)

    @classmethod
    async def open(cls, table: Mapping[str, Any], *, base: Path,
                   producer_id: str) -> RecordBackend:
        """Load the contracts' schemas (in a thread) and the TLS material; no call yet."""
        config = RivtaConfig.from_table(table)
        try:
            context = ssl.create_default_context(
                cafile=str(base / config.ca) if config.ca else None)
            if config.cert is not None and config.key is not None:
                context.load_cert_chain(base / config.cert, base / config.key)
        except (OSError, ssl.SSLError) as exc:
            raise AdapterConfigError(f"[backend] ca/cert/key: {exc}") from exc
        wanted = {c.contract.key: c.contract for c in config.contracts}
        loaded = await asyncio.gather(*(asyncio.to_thread(load_schema, c)
                                        for c in wanted.values()))
        schemas = dict(zip(wanted, loaded, strict=True))
        # trust_env stays off: proxies or CA bundles from the environment never apply.
        session = aiohttp.ClientSession(
            headers={"User-Agent": "samsvar-adapter",
                     "x-rivta-original-serviceconsumer-hsaid": config.consumer_hsa_id},
            trust_env=False, raise_for_status=False)
        return cls(config, producer_id, schemas=schemas, session=session, ssl_context=context)

    async def aclose(self) -> None:
        await self._session.close()

    async def readiness(self, units: Sequence[UnitRef]) -> list[str]:
        """Why this backend cannot answer as configured (empty: it can): checked at start-up.

        Each producer (each distinct endpoint origin) is reached once with the configured
        TLS material: a ``GET`` of its first endpoint. Any HTTP answer proves the mutual TLS
        handshake; a refused certificate, an unknown CA or no route is a reason.
        """
        first: dict[str, str] = {}
        for rc in self.config.contracts:
            first.setdefault(str(URL(rc.endpoint).origin()), rc.endpoint)
        reasons = []
        for origin, endpoint in first.items():
            try:
                async with asyncio.timeout(self.config.timeout_s), self._session.get(
                        endpoint, ssl=self._ssl, allow_redirects=False) as resp:
                    await resp.read()
            except aiohttp.ClientSSLError as exc:
                reasons.append(f"RIV-TA producer {origin}: TLS refused ({type(exc).__name__}): "
                               "check [backend] ca, cert and key")
            except aiohttp.ServerDisconnectedError:  # TLS 1.3: a refused client certificate
                reasons.append(f"RIV-TA producer {origin} closed the connection: does it accept "
                               "the client certificate ([backend] cert and key)?")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reasons.append(f"RIV-TA producer {origin} cannot be reached "
                               f"({type(exc).__name__})")
        return reasons

    # -- the port ------------------------------------------------------------------------

    async def fetch(self, subject: str, types: frozenset[str],
                    period: Period | None) -> BackendResult:
        wanted = [c for c in self.config.contracts if c.info_type in types]
        if not wanted:
            return BackendResult()
        correlation = str(uuid.uuid4())
        left_out: Counter[str] = Counter()
        try:
            async with asyncio.timeout(self.config.timeout_s), asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._contract(c, subject, period, correlation,
                                                       left_out), name=f"rivta-{c.info_type}")
                         for c in wanted]
        except TimeoutError:
            self._log.error("RIV-TA producer timeout", timeout_s=self.config.timeout_s,
                            correlation_id=correlation)
            raise BackendError("RIV-TA producer timeout") from None
        except ExceptionGroup as group:  # the first contract that failed speaks for all
            failed = group.subgroup(BackendError)
            if failed is None:
                raise
            first = failed.exceptions[0]
            while isinstance(first, ExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        finally:
            if left_out:
                self._log.warning("RIV-TA records not mapped: left out",
                                  left_out=dict(sorted(left_out.items())),
                                  correlation_id=correlation)
        records: list[Record] = []
        truncated = False
        for task in tasks:
            found, cut = task.result()
            records.extend(r for r in found if in_period(r, period))
            truncated |= cut
        order = {t: i for i, t in enumerate(INFORMATION_TYPES)}
        records.sort(key=lambda r: (order.get(str(r.__struct_config__.tag), 99),
                                    -r.time.timestamp()))
        return BackendResult(records=records, truncated=truncated)

    async def _contract(self, rc: RivtaContract, subject: str, period: Period | None,
                        correlation: str, left_out: Counter[str]) -> tuple[list[Record], bool]:
        contract = rc.contract
        schema = self._schemas[contract.key]
        reference: str | None = None
        raw: list[Any] = []
        for _ in range(self.config.max_pages):
            body = request_body(contract, subject, period, reference,
                                facility=self.config.logical_address)
            payload = await asyncio.to_thread(self._request, schema, contract, body)
            data = await self._post(rc, payload, correlation)
            try:
                page = await asyncio.to_thread(
                    parse_response, contract, data, self.config.logical_address,
                    schema if self.config.validate_responses else None)
            except ValueError as exc:
                self._log.error("RIV-TA response unreadable", contract=contract.key,
                                error=type(exc).__name__, correlation_id=correlation)
                raise BackendError(f"{contract.key}: response unreadable") from exc
            if isinstance(page, Fault):
                code = page.text.split(" ", 1)[0][:40]
                self._log.error("RIV-TA SOAP fault", contract=contract.key, fault=page.code,
                                code=code, correlation_id=correlation)
                raise BackendError(f"{contract.key}: SOAP fault {code}")
            if page.result_code == "ERROR":
                self._log.error("RIV-TA resultCode ERROR", contract=contract.key,
                                detail=page.detail[:120], correlation_id=correlation)
                raise BackendError(f"{contract.key}: resultCode ERROR")
            if page.result_code == "INFO":
                self._log.info("RIV-TA resultCode INFO", contract=contract.key,
                               detail=page.detail[:120], correlation_id=correlation)
            raw.extend(page.records)
            reference = page.next_reference if contract.paged else None
            if reference is None:
                break
        truncated = reference is not None
        if truncated:
            self._log.warning("RIV-TA hasMore: page limit reached, answer truncated",
                              contract=contract.key, pages=self.config.max_pages)
        records = await asyncio.to_thread(self._map_all, rc, raw, subject, left_out)
        return records, truncated

    def _request(self, schema: xmlschema.XMLSchema, contract: Contract,
                 body: dict[str, Any]) -> bytes:
        element = build(schema.elements[contract.name], body)
        try:
            schema.validate(element)
        except xmlschema.XMLSchemaValidationError as exc:
            raise BackendError(f"{contract.key}: request does not validate: {exc.reason}") from exc
        return envelope(element, logical_address=self.config.logical_address)

    async def _post(self, rc: RivtaContract, payload: bytes, correlation: str) -> bytes:
        headers = {"Content-Type": "text/xml; charset=utf-8",
                   "SOAPAction": f'"{rc.contract.soap_action}"',
                   "x-skltp-correlation-id": correlation}
        try:
            async with self._session.post(rc.endpoint, data=payload, headers=headers,
                                          ssl=self._ssl, allow_redirects=False) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            self._log.error("RIV-TA producer unreachable", contract=rc.contract.key,
                            error=type(exc).__name__, correlation_id=correlation)
            raise BackendError(f"{rc.contract.key}: producer unreachable") from exc
        if status != 200 and not (status == 500 and b"Fault" in data):
            self._log.error("RIV-TA producer HTTP error", contract=rc.contract.key,
                            status=status, correlation_id=correlation)
            raise BackendError(f"{rc.contract.key}: HTTP {status}")
        return data

    # -- mapping -------------------------------------------------------------------------

    def _map_all(self, rc: RivtaContract, raw: list[Any], subject: str,
                 left_out: Counter[str]) -> list[Record]:
        mapper = rmap.MAPPERS.get(rc.contract.key)
        cls = RECORD_CLASSES[rc.info_type]
        records: list[Record] = []
        for item in raw:
            if not isinstance(item, dict):
                left_out[f"{rc.contract.key}:not-a-record"] += 1
                continue
            try:
                if not self._about(item, subject):
                    raise rmap.Skip("other-patient")
                for mapped in mapper(item, self.config.timezone) if mapper else ():
                    records.append(self._record(cls, mapped))
            except rmap.Skip as exc:
                left_out[f"{rc.contract.key}:{exc}"] += 1
            except (msgspec.ValidationError, TypeError, ValueError) as exc:
                left_out[f"{rc.contract.key}:invalid-{type(exc).__name__}"] += 1
        return records

    @staticmethod
    def _about(item: dict[str, Any], subject: str) -> bool:
        """False when the record names another patient than the one asked about."""
        if item.get("subject_of_care") is not None:
            return str(item["subject_of_care"]) == subject
        for value in item.values():
            if isinstance(value, dict):
                pid = value.get("patientId")
                if pid is None and isinstance(value.get("accessControlHeader"), dict):
                    pid = value["accessControlHeader"].get("patientId")
                if isinstance(pid, dict):
                    found = pid.get("id") or pid.get("extension")
                    return found is None or str(found) == subject
        return True

    def _record(self, cls: type[Any], m: rmap.Mapped) -> Record:
        if not m.unit_id:
            raise rmap.Skip("no-unit")
        org_id = m.care_giver or self.config.organisation.id
        org_name = (self.config.care_givers.get(org_id)
                    or (self.config.organisation.name if org_id == self.config.organisation.id
                        else org_id))
        unit_name = m.unit_name or self.config.units.get(m.unit_id) or m.unit_id
        fields = {k: v for k, v in m.fields.items() if not k.startswith("_")}
        units = m.fields.get("_participant_units")
        if units:  # a plan's participating units, by name where the config knows it
            fields["participants"] = [self.config.units.get(u, u) for u in units]
        doc: dict[str, Any] = {
            "id": m.id,
            "source": {"producer": self.producer_id,
                       "organisation": {"id": org_id, "name": org_name},
                       "unit": {"id": m.unit_id, "name": unit_name},
                       "system": self.config.system},
            "time": m.time, "scope": self.config.scope, "codes": m.codes,
            **({"author": m.author} if m.author else {}),
            **({"care_process": m.care_process} if m.care_process else {}),
            **{k: v for k, v in fields.items() if v is not None},
        }
        names = set(cls.__struct_fields__)
        if m.approved_for_patient is not None and "approved_for_patient" in names:
            doc["approved_for_patient"] = m.approved_for_patient
        record: Record = msgspec.convert({k: v for k, v in doc.items() if k in names}, cls,
                                         from_attributes=False)
        return record
