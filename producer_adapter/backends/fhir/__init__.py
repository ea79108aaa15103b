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
system for a samordningsnummer), then per information type one search per resource with
``patient=Patient/<id>``, ``_count`` and ``_sort``; ``next`` links are followed (on the
same server only) until the type has more than ``max_records_per_type`` records (then the
answer says truncated). The period goes to the server only where the date parameter is the
record's time (or a superset); otherwise it is checked here on the record's time, so a
period never drops what the same search without one returns (``config._SEARCHES``).

Type → resources (the record's time: ``mapping._TIME_ELEMENTS``):

* ``medication`` → MedicationRequest, MedicationStatement
* ``diagnoses`` → Condition
* ``alerts`` → AllergyIntolerance, Flag
* ``lab_results`` → Observation of category ``laboratory``
* ``functional_status`` → Observation of category ``survey``, ``functional-status``,
  ``vital-signs`` or ``social-history``
* ``care_contacts`` → Encounter; ``care_plans`` → CarePlan; ``care_documentation`` →
  DocumentReference; ``social_care_interventions`` → ServiceRequest
* ``bookings`` → Appointment (the person among its participants); ``fixed_contacts`` →
  CareTeam (its first participant, a PractitionerRole); ``self_care`` → CarePlan with a
  self-care category (``config.SELF_CARE_CODES``; never also a ``care_plans`` record)

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

Each resource becomes a record, or is **unreadable** (no time, no code, …: listed in
``BackendResult.unreadable`` for the reply's count), **withheld** (a ``meta.security``
label not configured ``pass`` in ``[backend.security_labels]``: counted like a block), or
**no record** (entered-in-error, a "no known allergy" statement, another patient's, …: left
out and logged by resource type and reason, never with content). docs/fhir.md lists which.
An HTTP error (with or without an OperationOutcome),
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
