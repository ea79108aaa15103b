"""A record backend over a FHIR R4 REST server: search by the person's identifier, map back.

::

    [backend]
    kind = "fhir"
    base_url = "https://fhir.region.example/r4"
    organisation = { id = "SE2321000016-0001", name = "Region Exempel" }
    system = "Journalsystemet"              # source.system (optional)
    token_file = "secrets/fhir-token"       # optional bearer token (or token_env = "FHIR_TOKEN")
    ca = "certs/fhir-ca.pem"                # optional: the server's CA ...
    cert = "certs/adapter.pem"              # ... and a client certificate with its key
    key = "certs/adapter.key"
    identifier_system = "http://electronichealth.se/identifier/personnummer"       # default
    coordination_identifier_system = "http://electronichealth.se/identifier/samordningsnummer"
    unit_identifier_system = "urn:oid:1.2.752.29.4.19"   # HSA-id, the default
    unit = { id = "SE2321000016-0002", name = "…" }       # optional: when a resource names none
    timeout_s = 5
    max_records_per_type = 500
    page_size = 100
    types = ["medication", "diagnoses"]     # optional: the types this server holds (default all)
    timezone = "Europe/Stockholm"           # for dates and times without an offset (default)

    [backend.scope]                         # the marking (uppmärkning) of each record
    default = "hsl"
    types = { social_care_interventions = "sol_elderly" }
    security = { "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY" = "hsl" }
    extension = "https://example.se/fhir/StructureDefinition/scope"

One question is a ``Patient?identifier=<system>|<12 digits>`` search (the coordination
system for a samordningsnummer), then one search per information type with
``patient=Patient/<id>``, ``_count``, ``_sort`` and the period as ``ge``/``le`` of the
type's date parameter; ``next`` links are followed (on the same server only) until the
type has more than ``max_records_per_type`` matches (then the answer says truncated).

Type → resource, its date search parameter, and the element that gives the record's time:

* ``medication`` → MedicationRequest, ``authoredon``, authoredOn
* ``diagnoses`` → Condition, ``recorded-date``, recordedDate (else onset)
* ``alerts`` → AllergyIntolerance, ``date``, recordedDate (else onset)
* ``lab_results`` → Observation of category ``laboratory``, ``date``, effective[x] (else issued)
* ``functional_status`` → Observation of category ``survey`` or ``functional-status``, likewise
* ``care_contacts`` → Encounter, ``date``, period.start
* ``care_plans`` → CarePlan, ``date``, created (else period.start)
* ``care_documentation`` → DocumentReference, ``date``, date (else context.period.start)
* ``social_care_interventions`` → ServiceRequest, ``authored``, authoredOn (else
  occurrencePeriod.start)

**Scope.** The first that applies: the resource's (or its ``meta``'s) extension
``[backend.scope] extension`` whose ``valueCode`` is a scope (any other value leaves the
resource out); the first of its ``meta.security`` labels listed in ``security``
(``"system|code"``, or a bare ``"code"`` for any system); the type's default in ``types``;
``default``.

**Unit.** Blocks and excluded units are HSA-ids, so a unit is only ever taken from an
identifier in ``unit_identifier_system``: on an Organization reference (``identifier``), a
contained Organization or one read from the server (``Organization/<id>``), found in the
resource's own organisation elements (``serviceProvider``, ``custodian``, ``performer``,
``requester``, ``author``, …), else in the serviceProvider of its encounter, else
``[backend] unit``. A resource with none is left out.

A resource that cannot be mapped (no time, no unit, entered-in-error, refuted, a bad
scope, another patient's) is left out and counted in the adapter's log by resource type
and reason, never with its content. An HTTP error (with or without an OperationOutcome),
a timeout or a broken connection is a :class:`BackendError` whose reason carries only the
HTTP status and the OperationOutcome's issue codes.
"""

from .client import FhirBackend
from .config import DEFAULT_COORDINATION_SYSTEM, DEFAULT_IDENTIFIER_SYSTEM, HSA_SYSTEM, FhirConfig
from .mapping import map_resource

__all__ = [
    "DEFAULT_COORDINATION_SYSTEM",
    "DEFAULT_IDENTIFIER_SYSTEM",
    "HSA_SYSTEM",
    "FhirBackend",
    "FhirConfig",
    "map_resource",
]
