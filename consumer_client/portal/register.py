"""Who the portal's visitors are: the population register (folkbokföring) as a port.

A real citizen portal learns a person's name, their children and whether they have
protected personal data (skyddade personuppgifter) from the population register (Navet)
after the e-identification. The demo answers from ``demo.json`` instead
(:meth:`DemoRegister.from_demo`): the persons there and the ``guardians`` of each child.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.identity import PersonId, age_on, normalise

__all__ = ["DemoRegister", "Person", "PopulationRegister"]


@dataclass(frozen=True, kw_only=True)
class Person:
    """One person as the register knows them."""

    id: PersonId
    name: str
    protected_identity: bool = False
    guardians: tuple[PersonId, ...] = ()
    about: str = ""
    """What is special about this test person, for the demo sign-in list (never real data)."""
    tags: tuple[str, ...] = ()
    """The demo's tags of this person (``demo.json``)."""

    def age(self, day: dt.date) -> int:
        """Whole years of age on ``day``, by the identity number."""
        return age_on(self.id, day)


class PopulationRegister(Protocol):
    """The port: the persons one may sign in as, and whose guardian someone is."""

    def person(self, pid: str) -> Person | None:
        """The person with identity number ``pid`` (any accepted spelling), if known."""
        ...

    def children(self, guardian: str) -> Sequence[Person]:
        """The children ``guardian`` is registered guardian (vårdnadshavare) of."""
        ...

    def sign_in_choices(self) -> Sequence[Person]:
        """Everyone the demo sign-in offers, in a stable order."""
        ...


_ABOUT = {
    "sip": "har en SIP med region och kommun",
    "bookings": "har bokade tider",
    "child_under_13": "barn under 13 år",
    "child": "barn",
    "teen_13_15": "13–15 år",
    "protected_identity": "skyddade personuppgifter",
    "delayed": "testfall: ett nytt provsvar inom regionens fördröjning",
    "not_for_patient": "testfall: en diagnos som inte är godkänd för invånaren",
    "blocked": "har spärrat uppgifter",
    "over_85": "över 85 år",
    "social_care": "har insatser från kommunen",
    "several_producers": "uppgifter hos flera vårdgivare",
}


@dataclass(frozen=True)
class DemoRegister:
    """The demo's register, built from the persons of ``demo.json``."""

    persons: Mapping[str, Person]
    order: tuple[str, ...] = field(default=())

    @classmethod
    def from_demo(cls, persons: Iterable[Mapping[str, Any]]) -> DemoRegister:
        """From ``demo.json``'s ``persons``: ``{"id", "name", "tags", "guardians"?}``.

        A guardian who is not a demo person of their own is still someone who can sign in,
        named after the child ("Vårdnadshavare till ...").
        """
        found: dict[str, Person] = {}
        order: list[str] = []
        guardians_of: list[tuple[PersonId, str]] = []
        for raw in persons:
            pid = normalise(str(raw["id"]))
            tags = [str(t) for t in raw.get("tags", [])]
            guardians = tuple(normalise(str(g)) for g in raw.get("guardians", []) or [])
            if "child_under_13" in tags:
                tags = [t for t in tags if t != "child"]
            about = ", ".join(_ABOUT[t] for t in tags if t in _ABOUT)
            found[pid] = Person(id=pid, name=str(raw["name"]), guardians=guardians,
                                protected_identity="protected_identity" in tags, about=about,
                                tags=tuple(tags))
            order.append(pid)
            guardians_of += [(g, str(raw["name"])) for g in guardians]
        for gid, child in guardians_of:
            if gid not in found:
                found[gid] = Person(id=gid, name=f"Vårdnadshavare till {child}",
                                    about=f"vårdnadshavare till {child}")
                order.append(gid)
            elif not found[gid].about.startswith("vårdnadshavare"):
                p = found[gid]
                extra = f"vårdnadshavare till {child}"
                found[gid] = dataclasses.replace(
                    p, about=f"{p.about}, {extra}" if p.about else extra)
        # the own view's showcase first: the SIP, then the guardians
        first = {pid for pid in order if "sip" in found[pid].tags}
        guardian_ids = {gid for gid, _ in guardians_of}
        order.sort(key=lambda pid: 0 if pid in first else 1 if pid in guardian_ids else 2)
        return cls(persons=found, order=tuple(order))

    def person(self, pid: str) -> Person | None:
        try:
            return self.persons.get(normalise(pid))
        except ValueError:
            return None

    def children(self, guardian: str) -> list[Person]:
        gid = normalise(guardian)
        return [self.persons[p] for p in self.order if gid in self.persons[p].guardians]

    def sign_in_choices(self) -> list[Person]:
        return [self.persons[p] for p in self.order]
