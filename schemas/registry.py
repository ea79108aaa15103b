"""The federation registry: who takes part, in which role, with which keys.

The operator edits it as TOML (see docs/configuration.md)::

    [broker]
    id = "SE0000000000-BRK1"                 # the broker's id: the ``aud`` of every query
    keys = [{ kid = "...", kty = "OKP", crv = "Ed25519", x = "..." }]
    # keys no longer signing anything: they verify only the access log's checkpoints,
    # and only those up to the entry given
    retired_keys = [{ key = { kid = "...", kty = "OKP", crv = "Ed25519", x = "..." },
                      last_seq = 48210 }]

    [[participants]]
    id = "SE2321000999-RE01"
    name = "Region Exempel"
    kind = "vårdgivare"                      # or "omsorgsgivare", or "annan"
    roles = ["consumer", "producer"]         # and/or "log-extract", "citizen-portal"
    keys = [{ kid = "...", kty = "EC", crv = "P-256", x = "...", y = "..." }]

    [[producers]]
    id = "SE2321000999-P001"
    name = "Region Exempel, journal"
    organisation = "SE2321000999-RE01"       # a participant with the producer role
    types = ["medication", "diagnoses"]
    own_view_types = ["medication"]          # offered in the person's own view (SPEC 9)
    ombud_types = []                         # of those, what an ombud may read (opt-in)
    units = [{ id = "SE2321000999-U100", name = "Akutmottagningen" }]
    keys = [{ kid = "..." , kty = "OKP", crv = "Ed25519", x = "..." }]

A producer key given only as ``{ kid = "..." }`` refers to a key of its organisation.
Errors name the line of the file they concern.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, get_args

from .errors import RegistryError, UnknownKey
from .jose import Header, PublicKey, public_key_from_jwk
from .messages import ParticipantKind
from .records import INFORMATION_TYPES, OWN_VIEW_TYPES, OrgRef, UnitRef

__all__ = [
    "ROLES",
    "BrokerEntry",
    "Participant",
    "Producer",
    "Registry",
    "RetiredKey",
    "load_registry",
    "parse_registry",
]

ROLES: Final[frozenset[str]] = frozenset(
    {"consumer", "producer", "log-extract", "citizen-portal"})
_KINDS: Final[frozenset[str]] = frozenset(get_args(ParticipantKind))
_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, kw_only=True)
class RetiredKey:
    """A broker key taken out of use: it verifies the access log's checkpoints up to entry
    ``last_seq`` and nothing else (no adapter accepts a question signed with it)."""

    key: PublicKey
    last_seq: int


@dataclass(frozen=True, kw_only=True)
class BrokerEntry:
    id: str
    name: str
    keys: Mapping[str, PublicKey]
    retired_keys: Mapping[str, RetiredKey] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Participant:
    id: str
    name: str
    kind: ParticipantKind
    roles: frozenset[str]
    keys: Mapping[str, PublicKey]

    @property
    def ref(self) -> OrgRef:
        return OrgRef(id=self.id, name=self.name)


@dataclass(frozen=True, kw_only=True)
class Producer:
    id: str
    name: str
    organisation: Participant
    types: frozenset[str]
    units: tuple[UnitRef, ...]
    keys: Mapping[str, PublicKey]
    own_view_types: frozenset[str] = frozenset()
    """The types this producer offers in the person's own view (a subset of ``types``)."""
    ombud_types: frozenset[str] = frozenset()
    """Of those, the types it lets an ombud read (opt-in; a subset of ``own_view_types``)."""


@dataclass(frozen=True, kw_only=True)
class Registry:
    """The parsed, checked registry. Look-ups are by id; kinds come only from here."""

    broker: BrokerEntry
    participants: Mapping[str, Participant]
    producers: Mapping[str, Producer]
    path: str = ""
    _serving: dict[frozenset[str], tuple[Producer, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    """:meth:`producers_for`'s answers so far, by the set of types asked: a registry never
    changes (a new one is loaded instead), and one query used to scan every producer. At
    most one entry per combination of the nine information types (queries name only those)."""

    def producers_for(self, types: Iterable[str]) -> tuple[Producer, ...]:
        """Every producer serving at least one of ``types``, in registry order (a tuple:
        every query asking for the same types shares it)."""
        wanted = frozenset(types)
        serving = self._serving.get(wanted)
        if serving is None:
            serving = self._serving[wanted] = tuple(
                p for p in self.producers.values() if p.types & wanted)
        return serving

    def producers_for_own_view(self, types: Iterable[str], *,
                               ombud: bool = False) -> tuple[Producer, ...]:
        """Every producer offering at least one of ``types`` in the own view (to an ombud:
        only those that opted in for the type)."""
        wanted = frozenset(types)
        return tuple(p for p in self.producers.values()
                     if (p.ombud_types if ombud else p.own_view_types) & wanted)

    def participant_key(self, participant_id: str, header: Header) -> PublicKey:
        p = self.participants.get(participant_id)
        if p is None or header.kid not in p.keys:
            raise UnknownKey(f"kid {header.kid!r} is not registered for {participant_id!r}")
        return p.keys[header.kid]

    def producer_key(self, producer_id: str, header: Header) -> PublicKey:
        p = self.producers.get(producer_id)
        if p is None or header.kid not in p.keys:
            raise UnknownKey(f"kid {header.kid!r} is not registered for producer {producer_id!r}")
        return p.keys[header.kid]

    def broker_key(self, header: Header) -> PublicKey:
        if header.kid not in self.broker.keys:
            raise UnknownKey(f"kid {header.kid!r} is not registered for the broker")
        return self.broker.keys[header.kid]


class _Locator:
    """Finds the line of a value in the TOML text, for error messages."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def table(self, name: str, index: int) -> int:
        seen = -1
        for no, line in enumerate(self.lines, 1):
            if "".join(line.split("#", 1)[0].split()) == f"[[{name}]]":
                seen += 1
                if seen == index:
                    return no
        return 0

    def value(self, needle: str, after: int = 0) -> int:
        for no in range(max(after, 1), len(self.lines) + 1):
            if needle in self.lines[no - 1]:
                return no
        return after or 0


def _keys(
    raw: Any, *, where: str, at: int, loc: _Locator, path: str,
    inherit: Mapping[str, PublicKey] | None = None,
) -> dict[str, PublicKey]:
    if not isinstance(raw, list) or not raw:
        raise RegistryError(f"{where} needs at least one key in 'keys'", line=at, path=path)
    keys: dict[str, PublicKey] = {}
    for jwk in raw:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
            raise RegistryError(f"{where}: every key needs a 'kid'", line=at, path=path)
        kid = jwk["kid"]
        line = loc.value(f'"{kid}"', at)
        if kid in keys:
            raise RegistryError(f"{where}: duplicate kid {kid!r}", line=line, path=path)
        if set(jwk) == {"kid"}:
            if inherit is None or kid not in inherit:
                raise RegistryError(
                    f"{where}: unknown kid {kid!r} (not a key of its organisation)",
                    line=line, path=path,
                )
            keys[kid] = inherit[kid]
            continue
        try:
            keys[kid] = public_key_from_jwk(jwk)
        except ValueError as exc:
            raise RegistryError(f"{where}: key {kid!r}: {exc}", line=line, path=path) from exc
        if "d" in jwk:
            raise RegistryError(
                f"{where}: key {kid!r} is a private key; the registry holds public keys only",
                line=line, path=path,
            )
    return keys


def _retired_keys(raw: Any, *, current: Mapping[str, PublicKey], at: int, loc: _Locator,
                  path: str) -> dict[str, RetiredKey]:
    where = "[broker] retired_keys"
    line = loc.value("retired_keys", at) or at
    if not isinstance(raw, list):
        raise RegistryError(f"{where} must be a list of {{ key = {{...}}, last_seq = N }}",
                            line=line, path=path)
    retired: dict[str, RetiredKey] = {}
    for entry in raw:
        if not isinstance(entry, dict) or set(entry) != {"key", "last_seq"}:
            raise RegistryError(f"{where}: each entry is {{ key = {{...}}, last_seq = N }}, "
                                "the last entry its checkpoints may vouch for", line=line,
                                path=path)
        (kid, key), = _keys([entry["key"]], where=where, at=line, loc=loc, path=path).items()
        last_seq = entry["last_seq"]
        if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
            raise RegistryError(f"{where}: key {kid!r}: last_seq must be an entry number "
                                "(0 or more)", line=loc.value(f'"{kid}"', line), path=path)
        if kid in current or kid in retired:
            raise RegistryError(f"{where}: kid {kid!r} is also "
                                + ("in [broker] keys" if kid in current else "retired above"),
                                line=loc.value(f'"{kid}"', line), path=path)
        retired[kid] = RetiredKey(key=key, last_seq=last_seq)
    return retired


def _str(entry: Mapping[str, Any], key: str, *, where: str, at: int, path: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise RegistryError(f"{where} needs a non-empty string '{key}'", line=at, path=path)
    return value


def parse_registry(text: str, *, path: str = "") -> Registry:
    """Parse and check registry TOML; raises :class:`RegistryError` naming the line."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise RegistryError(f"not valid TOML: {exc}", line=int(m.group(1)) if m else None,
                            path=path) from exc
    loc = _Locator(text)

    raw_broker = doc.get("broker")
    if not isinstance(raw_broker, dict):
        raise RegistryError("missing [broker] table with the broker's id and keys", path=path)
    b_at = loc.value("[broker]")
    b_id = _str(raw_broker, "id", where="[broker]", at=b_at, path=path)
    b_keys = _keys(raw_broker.get("keys"), where="[broker]", at=b_at, loc=loc, path=path)
    broker = BrokerEntry(
        id=b_id,
        name=str(raw_broker.get("name", b_id)),
        keys=b_keys,
        retired_keys=_retired_keys(raw_broker.get("retired_keys", []), current=b_keys,
                                   at=b_at, loc=loc, path=path),
    )

    for table in ("participants", "producers"):
        entries = doc.get(table, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise RegistryError(f"'{table}' must be [[{table}]] tables",
                                line=loc.value(table) or None, path=path)

    participants: dict[str, Participant] = {}
    for i, raw in enumerate(doc.get("participants", [])):
        at = loc.table("participants", i)
        where = f"participant #{i + 1}"
        pid = _str(raw, "id", where=where, at=at, path=path)
        where = f"participant {pid!r}"
        if not _ID.match(pid):
            raise RegistryError(f"{where}: id may hold only letters, digits, '.', '_' and '-'",
                                line=at, path=path)
        if pid in participants:
            raise RegistryError(f"duplicate participant id {pid!r}", line=at, path=path)
        kind = raw.get("kind")
        if kind not in _KINDS:
            raise RegistryError(
                f"{where}: kind must be one of {', '.join(sorted(_KINDS))}, not {kind!r}",
                line=loc.value("kind", at), path=path,
            )
        roles = raw.get("roles", [])
        if (not isinstance(roles, list) or not roles
                or not all(isinstance(r, str) for r in roles) or not set(roles) <= ROLES):
            raise RegistryError(
                f"{where}: roles must be a non-empty list from {', '.join(sorted(ROLES))}",
                line=loc.value("roles", at), path=path,
            )
        if "consumer" in roles and kind == "annan":
            raise RegistryError(
                f"{where}: only a vårdgivare or omsorgsgivare can have the consumer role",
                line=loc.value("roles", at), path=path,
            )
        participants[pid] = Participant(
            id=pid, name=_str(raw, "name", where=where, at=at, path=path), kind=kind,
            roles=frozenset(roles),
            keys=_keys(raw.get("keys"), where=where, at=at, loc=loc, path=path),
        )

    producers: dict[str, Producer] = {}
    for i, raw in enumerate(doc.get("producers", [])):
        at = loc.table("producers", i)
        where = f"producer #{i + 1}"
        pid = _str(raw, "id", where=where, at=at, path=path)
        where = f"producer {pid!r}"
        if not _ID.match(pid):
            raise RegistryError(f"{where}: id may hold only letters, digits, '.', '_' and '-'",
                                line=at, path=path)
        if pid in producers:
            raise RegistryError(f"duplicate producer id {pid!r}", line=at, path=path)
        org_id = _str(raw, "organisation", where=where, at=at, path=path)
        org = participants.get(org_id)
        if org is None:
            raise RegistryError(f"{where}: organisation {org_id!r} is not a participant",
                                line=loc.value("organisation", at), path=path)
        if "producer" not in org.roles:
            raise RegistryError(f"{where}: organisation {org_id!r} lacks the producer role",
                                line=loc.value("organisation", at), path=path)
        types = raw.get("types", [])
        if not isinstance(types, list) or not types:
            raise RegistryError(f"{where} needs a non-empty list 'types'", line=at, path=path)
        for t in types:
            if t not in INFORMATION_TYPES:
                raise RegistryError(
                    f"{where}: {t!r} is not an information type of the spec "
                    f"({', '.join(INFORMATION_TYPES)})",
                    line=loc.value(f'"{t}"', at), path=path,
                )
        own = raw.get("own_view_types", [])
        if not isinstance(own, list) or not all(isinstance(t, str) for t in own):
            raise RegistryError(f"{where}: own_view_types must be a list of types",
                                line=loc.value("own_view_types", at), path=path)
        for t in own:
            if t not in OWN_VIEW_TYPES or t not in types:
                raise RegistryError(
                    f"{where}: own_view_types: {t!r} is not "
                    + ("one of the producer's types" if t in OWN_VIEW_TYPES else
                       f"a type of the own view ({', '.join(sorted(OWN_VIEW_TYPES))})"),
                    line=loc.value("own_view_types", at), path=path,
                )
        ombud = raw.get("ombud_types", [])
        if (not isinstance(ombud, list) or not all(isinstance(t, str) for t in ombud)
                or not set(ombud) <= set(own)):
            raise RegistryError(f"{where}: ombud_types must be a list of the producer's "
                                "own_view_types", line=loc.value("ombud_types", at), path=path)
        units: list[UnitRef] = []
        seen_units: set[str] = set()
        for u in raw.get("units", []):
            if not isinstance(u, dict):
                raise RegistryError(f"{where}: each unit is {{ id, name }}", line=at, path=path)
            uid = _str(u, "id", where=f"{where} unit", at=at, path=path)
            if uid in seen_units:
                raise RegistryError(f"{where}: duplicate unit id {uid!r}",
                                    line=loc.value(f'"{uid}"', at), path=path)
            seen_units.add(uid)
            units.append(UnitRef(id=uid, name=_str(u, "name", where=f"{where} unit {uid!r}",
                                                     at=at, path=path)))
        producers[pid] = Producer(
            id=pid, name=str(raw.get("name", pid)), organisation=org, types=frozenset(types),
            units=tuple(units), own_view_types=frozenset(own), ombud_types=frozenset(ombud),
            keys=_keys(raw.get("keys"), where=where, at=at, loc=loc, path=path,
                       inherit=org.keys),
        )
    return Registry(broker=broker, participants=participants, producers=producers, path=path)


def load_registry(path: str | Path) -> Registry:
    """Read and check the registry file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"cannot read registry: {exc.strerror}", path=str(p)) from exc
    return parse_registry(text, path=str(p))
