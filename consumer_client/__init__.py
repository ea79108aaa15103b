"""A consumer system's side of samsvar: sign a query, send it, read and print the answer.

Imports only ``schemas`` from this project, so a care giver's system can use it alone.
"""

from .client import Client, make_claims, make_own_claims, sign_own_query, sign_query
from .errors import (
    BadResponse,
    ClientError,
    ExtractNotProven,
    QueryRefused,
    QueryTimeout,
    TransportError,
)
from .extract import verify_extract
from .own import OwnClient
from .render import render_answer
from .streaming import assemble_answer

__all__ = [
    "BadResponse",
    "Client",
    "ClientError",
    "ExtractNotProven",
    "OwnClient",
    "QueryRefused",
    "QueryTimeout",
    "TransportError",
    "assemble_answer",
    "make_claims",
    "make_own_claims",
    "render_answer",
    "sign_own_query",
    "sign_query",
    "verify_extract",
]
