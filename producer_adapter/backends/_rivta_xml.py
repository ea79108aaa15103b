"""RIV-TA service contracts: the schemas shipped here, SOAP 1.1 envelopes, building and reading.

Shared by the ``rivta`` backend (a consumer of the contracts) and the RIV-TA producer stub
in :mod:`samsvar.rivta_stub`. Everything that touches XML is synchronous and CPU-bound:
callers on an event loop run it in a thread.

The XSD and WSDL files under ``rivta_contracts/`` are the published service contract
schemas (github.com/skltp-aggregerandetjanster, Apache-2.0), unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final
from xml.etree import ElementTree as ET

import xmlschema

__all__ = [
    "CONTRACTS",
    "LOGICAL_ADDRESS",
    "SOAP_ENV",
    "Contract",
    "Fault",
    "build",
    "envelope",
    "fault_envelope",
    "load_schema",
    "read_envelope",
]

SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
LOGICAL_ADDRESS: Final = "{urn:riv:itintegration:registry:1}LogicalAddress"


@dataclass(frozen=True, kw_only=True)
class Contract:
    """One version of a RIV-TA service contract and the samsvar type it carries."""

    name: str
    version: str
    info_type: str
    namespace: str
    """The responder namespace; ``SOAPAction`` is it plus ``:`` plus the operation."""
    records: str
    """The response's repeated record element."""
    id_style: str
    """How the request names the person: ``person`` (id/type), ``ii`` (root/extension),
    ``subject_of_care`` (a bare personnummer)."""
    paged: bool = False
    """3.x ``hasMore``: the reply names the next page's ``hasMoreReference``."""
    action: str = ""
    """The WSDL's ``soapAction`` where it is not the responder namespace + operation."""

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def soap_action(self) -> str:
        return self.action or f"{self.namespace}:{self.name}"

    @property
    def request_tag(self) -> str:
        return f"{{{self.namespace}}}{self.name}"

    @property
    def response_tag(self) -> str:
        return f"{{{self.namespace}}}{self.name}Response"


def _c(name: str, version: str, info_type: str, ns: str, records: str, id_style: str = "person",
       *, paged: bool = False, action_ns: str = "") -> Contract:
    major = version.split(".")[0]
    return Contract(name=name, version=version, info_type=info_type,
                    namespace=f"urn:riv:{ns}:{name}Responder:{major}", records=records,
                    id_style=id_style, paged=paged,
                    action=f"urn:riv:{action_ns}:{name}Responder:{major}:{name}" if action_ns
                    else "")


CONTRACTS: Final[Mapping[str, Contract]] = {c.key: c for c in (
    _c("GetCareDocumentation", "2.1", "care_documentation",
       "clinicalprocess:healthcond:description", "careDocumentation"),
    _c("GetCareDocumentation", "3.0", "care_documentation",
       "clinicalprocess:healthcond:description", "careDocumentation", "ii", paged=True),
    _c("GetDiagnosis", "2.0", "diagnoses", "clinicalprocess:healthcond:description", "diagnosis"),
    _c("GetMedicationHistory", "2.1", "medication",
       "clinicalprocess:activityprescription:actoutcome", "medicationMedicalRecord"),
    _c("GetAlertInformation", "2.0", "alerts", "clinicalprocess:healthcond:description",
       "alertInformation"),
    _c("GetLaboratoryOrderOutcome", "3.1", "lab_results", "clinicalprocess:healthcond:actoutcome",
       "laboratoryOrderOutcome"),
    _c("GetLaboratoryOrderOutcome", "4.0", "lab_results", "clinicalprocess:healthcond:actoutcome",
       "laboratoryOrderOutcome", "ii"),
    _c("GetCareContacts", "2.0", "care_contacts", "clinicalprocess:logistics:logistics",
       "careContact", action_ns="ehr:patientsummary"),  # as its WSDL says
    _c("GetCareContacts", "3.0", "care_contacts", "clinicalprocess:logistics:logistics",
       "careContact"),
    _c("GetCarePlans", "2.0", "care_plans", "clinicalprocess:logistics:logistics", "carePlan",
       action_ns="clinicalprocess:logistics"),  # as its WSDL says
    _c("GetFunctionalStatus", "2.0", "functional_status",
       "clinicalprocess:healthcond:description", "functionalStatusAssessment"),
    _c("GetSubjectOfCareSchedule", "1.1", "bookings", "crm:scheduling", "timeslotDetail",
       "subject_of_care"),
    _c("GetCareManagers", "1.0", "fixed_contacts",
       "coreprocess:residentparticipation:residentparticipation", "careManager", "ii"),
)}
"""Every contract version this backend speaks, by ``<name>-<version>``."""


def _schema_path(contract: Contract) -> Path:
    root = resources.files("producer_adapter.backends") / "rivta_contracts" / contract.key
    found = sorted(Path(str(root)).rglob(f"{contract.name}Responder_{contract.version}.xsd"))
    if not found:
        raise FileNotFoundError(f"no responder schema for {contract.key}")
    return found[0]


CORRECTIONS: Final[Mapping[str, tuple[tuple[str, str, str], ...]]] = {
    # XSD regular expressions have no anchors: the published pattern "^…$" demands a
    # literal "^" and "$", so no personnummer would validate (a known defect, see
    # ../shared/reference/README.md). Read as the authors meant it.
    "GetSubjectOfCareSchedule-1.1": (
        ("core_components/crm_scheduling_1.1.xsd", "^[0-9]{8}[0-9pPtTfF][0-9]{3}$",
         "[0-9]{8}[0-9pPtTfF][0-9]{3}"),
    ),
}
"""Known defects of published schemas, corrected in memory: (file, published, corrected)."""


def load_schema(contract: Contract) -> xmlschema.XMLSchema:
    """The contract's responder schema (with its core components); ~0.2-1.5 s: not on a loop.

    The shipped files are the published ones; :data:`CORRECTIONS` are applied when loading.
    """
    path = _schema_path(contract)
    fixes = CORRECTIONS.get(contract.key, ())
    if not fixes:
        return xmlschema.XMLSchema(str(path))
    root = path.parents[2]
    sources: list[Any] = []
    for name, published, corrected in fixes:
        core = root / name
        text = core.read_text(encoding="utf-8")
        if published not in text:
            raise ValueError(f"{core}: the corrected text is not there: {published!r}")
        sources.append(xmlschema.XMLResource(text.replace(published, corrected),
                                             base_url=str(core.parent)))
    # Loaded first, a corrected core schema stands in for the file the responder imports.
    group = xmlschema.XMLSchema([*sources, str(path)])
    schema = group.maps.namespaces[contract.namespace][0]
    assert isinstance(schema, xmlschema.XMLSchema)
    return schema


def build(xsd_element: Any, data: Any, parent: ET.Element | None = None) -> ET.Element:
    """An element of ``xsd_element`` from nested dicts, in the schema's order and namespaces.

    Keys are local element names; a list repeats the element; ``True``/``False`` become
    ``true``/``false``. Keys the schema does not have are ignored, so validate the result.
    """
    node = (ET.Element(xsd_element.name) if parent is None
            else ET.SubElement(parent, xsd_element.name))
    if not isinstance(data, Mapping):
        node.text = ("true" if data else "false") if isinstance(data, bool) else str(data)
        return node
    for child in xsd_element.type.content.iter_elements():
        if getattr(child, "type", None) is None or child.local_name not in data:
            continue
        value = data[child.local_name]
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                build(child, item, node)
    return node


def envelope(body: ET.Element, *, logical_address: str | None) -> bytes:
    """A SOAP 1.1 envelope with the RIV-TA ``LogicalAddress`` header around ``body``."""
    env = ET.Element(f"{{{SOAP_ENV}}}Envelope")
    header = ET.SubElement(env, f"{{{SOAP_ENV}}}Header")
    if logical_address is not None:
        ET.SubElement(header, LOGICAL_ADDRESS).text = logical_address
    ET.SubElement(env, f"{{{SOAP_ENV}}}Body").append(body)
    return bytes(ET.tostring(env, encoding="utf-8", xml_declaration=True))


@dataclass(frozen=True, kw_only=True)
class Fault:
    """A SOAP fault: ``code`` and ``text`` (the platform's, e.g. ``VP007 ...``)."""

    code: str
    text: str


def fault_envelope(code: str, text: str) -> bytes:
    env = ET.Element(f"{{{SOAP_ENV}}}Envelope")
    body = ET.SubElement(env, f"{{{SOAP_ENV}}}Body")
    fault = ET.SubElement(body, f"{{{SOAP_ENV}}}Fault")
    ET.SubElement(fault, "faultcode").text = f"soap:{code}"
    ET.SubElement(fault, "faultstring").text = text
    return bytes(ET.tostring(env, encoding="utf-8", xml_declaration=True))


def read_envelope(data: bytes) -> tuple[str | None, ET.Element | Fault]:
    """The ``LogicalAddress`` header and the body's element (or its fault).

    Raises ``ValueError`` when ``data`` is no SOAP 1.1 envelope with one body element.
    """
    try:
        env = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML: {exc}") from exc
    if env.tag != f"{{{SOAP_ENV}}}Envelope":
        raise ValueError("not a SOAP 1.1 envelope")
    address = env.findtext(f"{{{SOAP_ENV}}}Header/{LOGICAL_ADDRESS}")
    body = env.find(f"{{{SOAP_ENV}}}Body")
    children = list(body) if body is not None else []
    if len(children) != 1:
        raise ValueError("the SOAP body must hold exactly one element")
    [element] = children
    if element.tag == f"{{{SOAP_ENV}}}Fault":
        return address, Fault(code=(element.findtext("faultcode") or "").split(":")[-1],
                              text=(element.findtext("faultstring") or "").strip())
    return address, element
