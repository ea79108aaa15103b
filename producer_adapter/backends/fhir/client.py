"""The FHIR backend: searches the server, follows references, maps each resource."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import ssl
from collections import Counter
from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import msgspec
import structlog
from yarl import URL

from schemas.messages import Period
from schemas.records import INFORMATION_TYPES, Record, UnitRef

from ...errors import AdapterConfigError, BackendError
from ..base import BackendResult, RecordBackend, Unreadable, in_period
from .config import _SEARCHES, SELF_CARE_CODES, FhirConfig, _Search
from .mapping import (
    _UNIT_ELEMENTS,
    Json,
    LeftOut,
    UnreadableResource,
    Withheld,
    _coded,
    _contained,
    _dict,
    _display,
    _extension,
    _identifier_value,
    _list,
    map_resource,
    record_time,
    references_of,
)

__all__ = ["FhirBackend"]

# -- the backend -------------------------------------------------------------------------

_PATIENT_REF: Final = re.compile(r"(?:^|/)Patient/([^/]+)(?:/_history/[^/]+)?$")
_ORG_REF: Final = re.compile(r"(?:^|/)(Organization|Encounter)/([^/]+?)(?:/_history/[^/]+)?$")



_NO_UNIT: Final = UnitRef(id="", name="")


def _within(day: dt.date, period: Period | None) -> bool:
    return period is None or ((period.from_ is None or period.from_ <= day)
                              and (period.to is None or day <= period.to))


@dataclass
class _Fetch:
    """The state of one question: resources read by reference, the records, and what was
    left out, unreadable or withheld."""

    cache: dict[tuple[str, str], Json | None] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)
    unreadable: list[Unreadable] = field(default_factory=list)
    withheld: int = 0


class FhirBackend:
    """Reads one person's records from a FHIR R4 server; see the module docstring."""

    def __init__(self, config: FhirConfig, producer_id: str, *,
                 session: aiohttp.ClientSession, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        self.config = config
        self.producer_id = producer_id
        self._session = session
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._origin = URL(config.base_url).origin()
        self._log = structlog.get_logger("samsvar.adapter.backend").bind(
            backend="fhir", producer=producer_id)

    # -- the factory -----------------------------------------------------------------

    @classmethod
    def check_config(cls, table: Mapping[str, Any]) -> None:
        """Check the table (no files read, no server asked)."""
        FhirConfig.from_table(table)

    @classmethod
    async def open(cls, table: Mapping[str, Any], *, base: Path,
                   producer_id: str) -> RecordBackend:
        """Read the token and certificates and make the HTTP session (no request yet)."""
        config = FhirConfig.from_table(table)
        headers = {"Accept": "application/fhir+json", "User-Agent": "samsvar-adapter"}
        token = cls._token(config, base)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        context = cls._ssl_context(config, base)
        session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=config.timeout_s),
            raise_for_status=False)
        return cls(config, producer_id, session=session, ssl_context=context)

    @staticmethod
    def _token(config: FhirConfig, base: Path) -> str | None:
        if config.token_env is not None:
            token = os.environ.get(config.token_env, "").strip()
            if not token:
                raise AdapterConfigError(
                    f"[backend] token_env: the environment variable {config.token_env} "
                    "is not set")
            return token
        if config.token_file is not None:
            path = base / config.token_file
            try:
                token = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise AdapterConfigError(
                    f"[backend] token_file: cannot read {path}: {exc.strerror}") from exc
            if not token:
                raise AdapterConfigError(f"[backend] token_file: {path} is empty")
            return token
        return None

    @staticmethod
    def _ssl_context(config: FhirConfig, base: Path) -> ssl.SSLContext | None:
        if config.ca is None and config.cert is None:
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(base / config.ca) if config.ca else None)
            if config.cert is not None and config.key is not None:
                context.load_cert_chain(base / config.cert, base / config.key)
        except (OSError, ssl.SSLError) as exc:
            raise AdapterConfigError(f"[backend] ca/cert/key: {exc}") from exc
        return context

    # -- the port ----------------------------------------------------------------------

    async def fetch(
        self, subject: str, types: frozenset[str], period: Period | None
    ) -> BackendResult:
        wanted = [t for t in INFORMATION_TYPES if t in types and t in self.config.types]
        if not wanted:
            return BackendResult()
        state = _Fetch()
        try:
            async with asyncio.timeout(self.config.timeout_s):
                patients = await self._patients(subject)
                if not patients:
                    return BackendResult()
                truncated = False
                for info_type in wanted:
                    truncated |= await self._collect(info_type, patients, period, state)
        except TimeoutError:
            self._log.error("FHIR server timeout", timeout_s=self.config.timeout_s)
            raise BackendError("FHIR server timeout") from None
        finally:
            if state.left_out:
                self._log.warning("FHIR resources not mapped: left out",
                                  left_out=dict(sorted(state.left_out.items())))
        if state.unreadable and not state.records and not state.withheld and all(
                u.unit is None for u in state.unreadable):
            # nothing could be placed in a unit: say so instead of answering no_data
            self._log.error("FHIR resources name no unit: cannot answer",
                            unit_identifier_system=self.config.unit_identifier_system)
            raise BackendError("FHIR server: no resource names a unit")
        return BackendResult(records=state.records, truncated=truncated,
                             unreadable=state.unreadable, withheld=state.withheld)

    async def readiness(self, units: Sequence[UnitRef]) -> list[str]:
        """Why this backend cannot answer as configured (empty: it can): checked at start-up.

        Blocks and excluded units need each record's unit. Without ``[backend] unit`` or
        ``unit_extension``, a server holding no Organization with a unit identifier can
        only answer for resources that name their unit by identifier; with a default unit,
        a producer of several units has every record in that one unit.
        """
        if self.config.unit_extension is not None:
            return []
        system = self.config.unit_identifier_system
        try:
            async with asyncio.timeout(self.config.timeout_s):
                params = [("identifier", f"{system}|"), ("_count", "1")]
                found = False
                async for page in self._bundle_pages("Organization", params, _Fetch()):
                    found = found or any(
                        _identifier_value(org.get("identifier"), system) for org in page)
                    break
        except (BackendError, TimeoutError):
            return ["the FHIR server could not be asked at start-up whether it names units"]
        if found:
            return []
        several = f"the producer has {len(units)} units, but " if len(units) > 1 else ""
        missing = f"{several}the FHIR server holds no Organization with a unit identifier"
        if self.config.unit is None:
            return [(f"{missing} ({system}): only resources naming their unit by that "
                     "identifier can be answered, every other is left out (set [backend] "
                     "unit, unit_extension or unit_identifier_system)")]
        if len(units) > 1:
            return [(f"{missing} ({system}): every record is given [backend] unit "
                     f"{self.config.unit.id}, so excluded units and unit blocks cannot tell "
                     "the others apart")]
        return []

    async def aclose(self) -> None:
        await self._session.close()

    # -- searching ---------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.config.base_url}/{path}"

    async def _get(self, url: str | URL, params: list[tuple[str, str]] | None = None, *,
                   what: str, missing_ok: bool = False) -> Json | None:
        try:
            async with self._session.get(url, params=params, ssl=self._ssl,
                                         allow_redirects=False) as resp:
                body = await resp.read()
                status = resp.status
        except aiohttp.ClientError as exc:
            self._log.error("FHIR server unreachable", resource=what, error=type(exc).__name__)
            raise BackendError("FHIR server unreachable") from exc
        if missing_ok and status in (404, 410):
            return None
        try:
            doc = msgspec.json.decode(body) if body else None
        except msgspec.DecodeError:
            doc = None
        if status >= 300:
            codes = sorted({str(_dict(i).get("code")) for i in _list(_dict(doc).get("issue"))
                            if _dict(i).get("code")}) if _dict(doc).get(
                "resourceType") == "OperationOutcome" else []
            self._log.error("FHIR server refused", resource=what, status=status, issues=codes)
            detail = f" ({', '.join(codes)})" if codes else ""
            raise BackendError(f"FHIR server: HTTP {status}{detail}")
        if not isinstance(doc, dict) or "resourceType" not in doc:
            self._log.error("FHIR server sent no FHIR resource", resource=what, status=status)
            raise BackendError("FHIR server sent no FHIR resource")
        return doc

    async def _bundle_pages(self, resource: str, params: list[tuple[str, str]],
                            state: _Fetch) -> AsyncGenerator[list[Json], None]:
        """Each page's matches (an async generator), following ``next`` links."""
        url: str | URL = self._url(resource)
        query: list[tuple[str, str]] | None = params
        while True:
            doc = await self._get(url, query, what=resource)
            assert doc is not None
            if doc.get("resourceType") != "Bundle":
                self._log.error("FHIR server sent no Bundle", resource=resource)
                raise BackendError("FHIR server sent no Bundle")
            matches = []
            for entry in map(_dict, _list(doc.get("entry"))):
                found = _dict(entry.get("resource"))
                mode = _dict(entry.get("search")).get("mode", "match")
                if mode == "include" and found.get("id"):
                    state.cache[(str(found.get("resourceType")), str(found["id"]))] = found
                elif mode == "match" and found.get("resourceType") == resource:
                    matches.append(found)
            yield matches
            link = next((str(x["url"]) for x in map(_dict, _list(doc.get("link")))
                         if x.get("relation") == "next" and x.get("url")), None)
            if link is None:
                return
            following = URL(self.config.base_url + "/").join(URL(link))
            if following.origin() != self._origin:
                self._log.error("FHIR next link leaves the server: not followed",
                                resource=resource)
                raise BackendError("FHIR server: next link to another server")
            url, query = following, None

    async def _patients(self, subject: str) -> set[str]:
        day = int(subject[6:8])
        system = (self.config.coordination_identifier_system if day > 60
                  else self.config.identifier_system)
        params = [("identifier", f"{system}|{subject}")]
        ids: set[str] = set()
        async for page in self._bundle_pages("Patient", params, _Fetch()):
            for patient in page:
                if _identifier_value(patient.get("identifier"), system) == subject:
                    ids.add(str(patient.get("id")))
        return ids

    def _search_params(self, search: _Search, info_type: str, patient: str,
                       period: Period | None) -> list[tuple[str, str]]:
        params = [("patient", f"Patient/{patient}"), ("_count", str(self.config.page_size))]
        if search.resource == "Observation":
            codes = [c for c, t in self.config.observation_categories.items() if t == info_type]
            if codes:
                params.append(("category", ",".join(codes)))
        if info_type == "social_care_interventions" and self.config.service_request_category:
            params.append(("category", self.config.service_request_category))
        if search.on_server and period is not None and period.from_ is not None:
            params.append((search.date, f"ge{period.from_.isoformat()}"))
        if search.on_server and period is not None and period.to is not None:
            params.append((search.date, f"le{period.to.isoformat()}"))
        if self.config.sort:
            params.append(("_sort", f"-{search.date}"))
        return params

    def _is_type(self, resource: Json, info_type: str) -> bool:
        if resource.get("resourceType") == "CarePlan":
            categories = {code.split("|")[-1].lower() for c in _list(resource.get("category"))
                          for code in _coded(c)}
            return bool(categories & SELF_CARE_CODES) == (info_type == "self_care")
        if resource.get("resourceType") != "Observation":
            return True
        categories = {code.split("|")[-1] for c in _list(resource.get("category"))
                      for code in _coded(c)}
        return any(self.config.observation_categories.get(c) == info_type for c in categories)

    async def _collect(self, info_type: str, patients: set[str], period: Period | None,
                       state: _Fetch) -> bool:
        """Map the type's matches into ``state``; True when there were more than the limit
        (so a truncated type always has its limit of records)."""
        limit, count = self.config.max_records_per_type, 0
        for search in _SEARCHES[info_type]:
            for patient in sorted(patients):
                params = self._search_params(search, info_type, patient, period)
                pages = self._bundle_pages(search.resource, params, state)
                async for page in pages:
                    for resource in page:
                        if not self._is_type(resource, info_type):
                            continue
                        record = await self._record(resource, info_type, search, patients,
                                                    period, state)
                        if record is None:
                            continue
                        if count == limit:
                            await pages.aclose()
                            return True
                        state.records.append(record)
                        count += 1
        return False

    # -- mapping -----------------------------------------------------------------------

    async def _record(self, resource: Json, info_type: str, search: _Search,
                      patients: set[str], period: Period | None, state: _Fetch
                      ) -> Record | None:
        kind = str(resource.get("resourceType"))
        if kind == "Appointment":  # the person is one of its participants
            refs = [str(_dict(_dict(p).get("actor")).get("reference", ""))
                    for p in _list(resource.get("participant"))]
        else:
            refs = [str(_dict(resource.get(search.subject)).get("reference", ""))]
        matches = [m.group(1) for m in map(_PATIENT_REF.search, refs) if m is not None]
        if not matches or not set(matches) <= patients:
            state.left_out[f"{kind}:other-patient"] += 1
            return None
        moment = record_time(resource, self.config.timezone)
        if moment is not None and not _within(moment.date(), period):
            return None  # outside the period (a time-less one may be inside: it counts)
        unit = await self._unit(resource, state)
        referenced = await self._references(resource, state)
        try:
            record = map_resource(resource, info_type, config=self.config,
                                  producer_id=self.producer_id, unit=unit or _NO_UNIT,
                                  referenced=referenced)
        except Withheld:
            state.withheld += 1
            return None
        except LeftOut as exc:
            state.left_out[f"{kind}:{exc}"] += 1
            return None
        except UnreadableResource as exc:
            state.unreadable.append(Unreadable(
                type=info_type, resource=kind, reason=str(exc),
                organisation=self.config.organisation.id, unit=unit.id if unit else None))
            return None
        if unit is None:
            state.unreadable.append(Unreadable(
                type=info_type, resource=kind, reason="no-unit",
                organisation=self.config.organisation.id))
            return None
        return record if in_period(record, period) else None

    async def _references(self, resource: Json, state: _Fetch) -> dict[str, Json]:
        """What mapping ``resource`` reads (authors, medication), from the cache or server."""
        out: dict[str, Json] = {}
        queue = list(references_of(resource, self.config.base_url))
        while queue:
            key = queue.pop()
            if key in out:
                continue
            kind, _, rid = key.partition("/")
            found = await self._read(kind, rid, state)
            if found is not None and found.get("resourceType") == kind:
                out[key] = found
                queue.extend(references_of(found, self.config.base_url))
        return out

    async def _read(self, kind: str, rid: str, state: _Fetch) -> Json | None:
        key = (kind, rid)
        if key not in state.cache:
            state.cache[key] = await self._get(self._url(f"{kind}/{rid}"), what=kind,
                                               missing_ok=True)
        return state.cache[key]

    def _unit_of_org(self, org: Json | None, display: str = "") -> UnitRef | None:
        if org is None or org.get("resourceType") != "Organization":
            return None
        hsa = _identifier_value(org.get("identifier"), self.config.unit_identifier_system)
        if hsa is None:
            return None
        return UnitRef(id=hsa, name=str(org.get("name") or display or hsa))

    async def _follow(self, resource: Json, ref: Any, state: _Fetch, *,
                      kinds: Collection[str]) -> Json | None:
        """The resource ``ref`` points to (contained, or on this server), if of ``kinds``."""
        contained = _contained(resource, ref)
        if contained is not None:
            return contained if contained.get("resourceType") in kinds else None
        reference = str(_dict(ref).get("reference", ""))
        match = _ORG_REF.search(reference)
        if match is None or match.group(1) not in kinds:
            return None
        if "://" in reference:
            target = URL(reference)
            if target.origin() != self._origin:
                return None  # another server: the token is not sent there
        return await self._read(match.group(1), match.group(2), state)

    async def _unit_of_ref(self, resource: Json, ref: Any, state: _Fetch) -> UnitRef | None:
        ref = _dict(ref)
        hsa = _identifier_value(ref.get("identifier"), self.config.unit_identifier_system)
        if hsa is not None:
            return UnitRef(id=hsa, name=_display(ref) or hsa)
        found = await self._follow(resource, ref, state, kinds=("Organization",))
        return self._unit_of_org(found, _display(ref))

    async def _unit(self, resource: Json, state: _Fetch) -> UnitRef | None:
        ext = _extension(resource, self.config.unit_extension)
        if ext is not None:
            if ext.get("valueIdentifier"):
                ident = _dict(ext["valueIdentifier"])
                if ident.get("system") == self.config.unit_identifier_system and ident.get(
                        "value"):
                    return UnitRef(id=str(ident["value"]), name=str(ident["value"]))
            unit = await self._unit_of_ref(resource, ext.get("valueReference"), state)
            if unit is not None:
                return unit
        kind = str(resource.get("resourceType"))
        refs = [ref for element in _UNIT_ELEMENTS.get(kind, ()) for ref in
                _list(resource.get(element))]
        if kind == "Appointment":  # a Location or Organization among the participants
            refs += [_dict(p).get("actor") for p in _list(resource.get("participant"))]
        if kind == "CareTeam":
            refs += [_dict(p).get("onBehalfOf") for p in _list(resource.get("participant"))]
        for ref in refs:
            if ref:
                unit = await self._unit_of_ref(resource, ref, state)
                if unit is not None:
                    return unit
        encounters = _list(resource.get("encounter")) or _list(
            _dict(resource.get("context")).get("encounter"))
        for ref in encounters:
            encounter = await self._follow(resource, ref, state, kinds=("Encounter",))
            if encounter is not None:
                unit = await self._unit_of_ref(encounter, encounter.get("serviceProvider"),
                                               state)
                if unit is not None:
                    return unit
        return self.config.unit
