""""Min översikt": a demo citizen portal for the person's own view (SPEC sections 8 and 9).

A person signs in (in the demo by choosing a test person: not an e-identification) and
sees their own plans (the SIP first), bookings, fixed contacts, self-care, medication and
results from every producer, with each source's state told honestly; a guardian switches to
a child under 13. The portal asks the broker like any portal would: ``POST
/v1/own/queries`` with a ``samsvar-own-query+jwt`` token signed by its own key
(:class:`~consumer_client.own.OwnClient`).

Imports only ``schemas`` and ``consumer_client``.
"""

from .app import PortalConfig, make_app, running_portal, serve_portal
from .pages import CSP, THEMES, Outcome, Target, overview_page, sign_in_page, source_state
from .register import DemoRegister, Person, PopulationRegister

__all__ = [
    "CSP",
    "THEMES",
    "DemoRegister",
    "Outcome",
    "Person",
    "PopulationRegister",
    "PortalConfig",
    "Target",
    "make_app",
    "overview_page",
    "running_portal",
    "serve_portal",
    "sign_in_page",
    "source_state",
]
