"""Compact JWS: round trips, interoperability with joserfc and PyJWT, and refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import warnings
from collections.abc import Callable, Iterator
from typing import cast

import jwt as pyjwt
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt as rfc_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import JWKRegistry, Key

from schemas import BadSignature, BadToken, DuplicateMember, JoseError, UnknownKey
from schemas.jose import (
    Alg,
    Header,
    PublicKey,
    b64url_decode,
    b64url_encode,
    generate_key,
    private_key_from_jwk,
    public_key_from_jwk,
    read_header,
    reject_duplicate_members,
    sign,
    unknown_key,
    verify,
)
from schemas.messages import QUERY_TYP, REPLY_TYP, QueryClaims, User
from schemas.records import UnitRef

ALGS: list[Alg] = ["EdDSA", "ES256"]

# RFC 8037 appendix A: an Ed25519 key, its thumbprint, and a signature over a fixed input.
RFC8037_JWK = {"kty": "OKP", "crv": "Ed25519",
               "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
               "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
RFC8037_INPUT = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
RFC8037_SIGNATURE = ("hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVv"
                     "pAr_MuM0KAg")


def rfc_key(jwk: dict[str, str]) -> Key:
    """Our JWK as a joserfc key."""
    return JWKRegistry.import_key(cast("dict[str, str | list[str]]", jwk))


def only(key: PublicKey) -> Callable[[Header], PublicKey]:
    """A ``key_for`` that knows exactly one key, as a registry look-up would."""
    def key_for(header: Header) -> PublicKey:
        if header.kid != key.kid:
            raise unknown_key(header.kid, "the test issuer")
        return key
    return key_for


def claims() -> QueryClaims:
    return QueryClaims(
        iss="SE2321000016-0001", aud="SE0000000000-BRK1", iat=1_800_000_000,
        exp=1_800_000_060, jti="6c1f4c1e-2f6b-4a51-9a43-6c0d1f1d2e3f", sub="193803039142",
        user=User(id="SE2321000016-1ABC", name="Anna", role="läkare",
                  unit=UnitRef(id="SE2321000016-7Z3B", name="Akuten")),
        relation=True, basis="consent", types=["medication"],
    )


def raw_token(header: dict[str, object], payload: bytes, signature: bytes = b"") -> str:
    head = b64url_encode(json.dumps(header).encode())
    return f"{head}.{b64url_encode(payload)}.{b64url_encode(signature)}"


@pytest.fixture
def no_eddsa_deprecation() -> Iterator[None]:
    """joserfc warns that RFC 9864 deprecates ``EdDSA``; SPEC section 3 still names it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)
        yield


# -- our own round trip ------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_round_trip(alg: Alg) -> None:
    key = generate_key(alg)
    payload = msgspec.json.encode(claims())
    token = sign(payload, key, typ=QUERY_TYP)
    header, body = verify(token, only(key.public), typ=QUERY_TYP)
    assert header == Header(alg=alg, kid=key.kid, typ=QUERY_TYP)
    assert body == payload
    assert read_header(token) == header
    # bytes in, same result
    assert verify(token.encode(), only(key.public), typ=QUERY_TYP) == (header, body)
    # typ=None accepts any typ
    assert verify(token, only(key.public), typ=None)[1] == payload


def test_generate_key_refuses_other_algorithms() -> None:
    with pytest.raises(ValueError):
        generate_key("RS256")  # type: ignore[arg-type]


def test_rfc8037_vectors() -> None:
    key = private_key_from_jwk(RFC8037_JWK)
    assert key.kid == RFC8037_THUMBPRINT
    assert b64url_encode(key.sign(RFC8037_INPUT)) == RFC8037_SIGNATURE
    assert key.public.verify(RFC8037_INPUT, b64url_decode(RFC8037_SIGNATURE))


# -- interoperability ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_joserfc_token_verifies(alg: Alg, no_eddsa_deprecation: None) -> None:
    key = generate_key(alg)
    jwk = rfc_key(key.to_jwk())
    token = rfc_jwt.encode({"alg": alg, "kid": key.kid, "typ": QUERY_TYP},
                           msgspec.to_builtins(claims()), jwk, algorithms=[alg])
    header, body = verify(token, only(key.public), typ=QUERY_TYP)
    assert header.alg == alg
    assert msgspec.json.decode(body, type=QueryClaims) == claims()


@pytest.mark.parametrize("alg", ALGS)
def test_pyjwt_token_verifies(alg: Alg) -> None:
    key = generate_key(alg)
    token = pyjwt.encode(msgspec.to_builtins(claims()), pyjwt.PyJWK(key.to_jwk()).key,
                         algorithm=alg, headers={"kid": key.kid, "typ": QUERY_TYP})
    header, body = verify(token, only(key.public), typ=QUERY_TYP)
    assert header.alg == alg and header.kid == key.kid
    assert msgspec.json.decode(body, type=QueryClaims) == claims()


@pytest.mark.parametrize("alg", ALGS)
def test_our_token_verifies_in_joserfc(alg: Alg, no_eddsa_deprecation: None) -> None:
    key = generate_key(alg)
    token = sign(msgspec.json.encode(claims()), key, typ=QUERY_TYP)
    public = rfc_key(key.public.to_jwk())
    decoded = rfc_jwt.decode(token, public, algorithms=[alg])
    assert decoded.header == {"alg": alg, "kid": key.kid, "typ": QUERY_TYP}
    assert decoded.claims == msgspec.to_builtins(claims())


@pytest.mark.parametrize("alg", ALGS)
def test_our_token_verifies_in_pyjwt(alg: Alg) -> None:
    key = generate_key(alg)
    token = sign(msgspec.json.encode(claims()), key, typ=QUERY_TYP)
    public = pyjwt.PyJWK(key.public.to_jwk()).key
    decoded = pyjwt.decode(token, public, algorithms=[alg],
                           options={"verify_exp": False, "verify_aud": False,
                                    "verify_iat": False})
    assert decoded == msgspec.to_builtins(claims())
    assert pyjwt.get_unverified_header(token) == {"alg": alg, "kid": key.kid, "typ": QUERY_TYP}


# -- algorithm confusion -----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_is_refused(alg: str) -> None:
    key = generate_key()
    token = raw_token({"alg": alg, "kid": key.kid, "typ": QUERY_TYP},
                      msgspec.json.encode(claims()))
    with pytest.raises(BadSignature, match="not accepted"):
        verify(token, only(key.public), typ=QUERY_TYP)
    with pytest.raises(BadSignature):
        read_header(token)


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("hs", ["HS256", "HS384", "HS512"])
def test_hmac_with_the_public_key_as_secret_is_refused(alg: Alg, hs: str) -> None:
    key = generate_key(alg)
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[hs]
    head = b64url_encode(json.dumps({"alg": hs, "kid": key.kid, "typ": QUERY_TYP}).encode())
    body = b64url_encode(msgspec.json.encode(claims()))
    signing_input = f"{head}.{body}".encode()
    for secret in (json.dumps(key.public.to_jwk()).encode(),
                   msgspec.json.encode(key.public.to_jwk()),
                   b64url_decode(key.public.to_jwk()["x"])):
        mac = hmac.new(secret, signing_input, digest).digest()
        with pytest.raises(BadSignature):
            verify(f"{head}.{body}.{b64url_encode(mac)}", only(key.public), typ=QUERY_TYP)


@pytest.mark.parametrize(("signer", "registered"), [("ES256", "EdDSA"), ("EdDSA", "ES256")])
def test_token_of_another_algorithm_for_a_kid_is_refused(signer: Alg, registered: Alg) -> None:
    good = generate_key(registered)
    attacker = private_key_from_jwk({**generate_key(signer).to_jwk(), "kid": good.kid})
    token = sign(msgspec.json.encode(claims()), attacker, typ=QUERY_TYP)
    assert read_header(token).kid == good.kid
    with pytest.raises(BadSignature, match=f"registered for {registered}"):
        verify(token, only(good.public), typ=QUERY_TYP)


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES384", "ES512", "Ed25519", "eddsa", "es256"])
def test_other_algorithms_are_refused(alg: str) -> None:
    key = generate_key()
    token = raw_token({"alg": alg, "kid": key.kid}, b"{}", b"x" * 64)
    with pytest.raises(BadSignature):
        verify(token, only(key.public), typ=None)


# -- tampering, wrong key, wrong typ ----------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_tampered_payload_is_refused(alg: Alg) -> None:
    key = generate_key(alg)
    head, _, sig = sign(msgspec.json.encode(claims()), key, typ=QUERY_TYP).split(".")
    forged = msgspec.json.encode(msgspec.structs.replace(claims(), sub="191212121212"))
    with pytest.raises(BadSignature, match="does not verify"):
        verify(f"{head}.{b64url_encode(forged)}.{sig}", only(key.public), typ=QUERY_TYP)


@pytest.mark.parametrize("alg", ALGS)
def test_tampered_header_is_refused(alg: Alg) -> None:
    key = generate_key(alg)
    _, body, sig = sign(b"{}", key, typ=REPLY_TYP).split(".")
    head = b64url_encode(msgspec.json.encode(Header(alg=alg, kid=key.kid, typ=QUERY_TYP)))
    with pytest.raises(BadSignature):
        verify(f"{head}.{body}.{sig}", only(key.public), typ=QUERY_TYP)


@pytest.mark.parametrize("alg", ALGS)
def test_tampered_signature_is_refused(alg: Alg) -> None:
    key = generate_key(alg)
    head, body, sig = sign(b"{}", key, typ=QUERY_TYP).split(".")
    raw = bytearray(b64url_decode(sig))
    for i in (0, len(raw) // 2, len(raw) - 1):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        with pytest.raises(BadSignature):
            verify(f"{head}.{body}.{b64url_encode(bytes(flipped))}", only(key.public),
                   typ=QUERY_TYP)
    for wrong_length in (raw[:-1], raw + b"\0", b""):
        with pytest.raises(BadSignature):
            verify(f"{head}.{body}.{b64url_encode(bytes(wrong_length))}", only(key.public),
                   typ=QUERY_TYP)


def test_other_key_with_same_kid_is_refused() -> None:
    key = generate_key()
    impostor = public_key_from_jwk({**generate_key().public.to_jwk(), "kid": key.kid})
    with pytest.raises(BadSignature):
        verify(sign(b"{}", key, typ=QUERY_TYP), only(impostor), typ=QUERY_TYP)


def test_unknown_kid_raises_unknown_key() -> None:
    key, other = generate_key(), generate_key()
    with pytest.raises(UnknownKey, match=repr(key.kid)):
        verify(sign(b"{}", key, typ=QUERY_TYP), only(other.public), typ=QUERY_TYP)


@pytest.mark.parametrize("typ", [REPLY_TYP, "JWT", "SAMSVAR-QUERY+JWT", ""])
def test_wrong_typ_is_refused(typ: str) -> None:
    key = generate_key()
    token = sign(b"{}", key, typ=typ)
    with pytest.raises(BadToken, match="typ"):
        verify(token, only(key.public), typ=QUERY_TYP)


def test_missing_typ_is_refused_when_one_is_required() -> None:
    key = generate_key()
    head = b64url_encode(msgspec.json.encode(Header(alg=key.alg, kid=key.kid)))
    body = b64url_encode(b"{}")
    sig = b64url_encode(key.sign(f"{head}.{body}".encode()))
    token = f"{head}.{body}.{sig}"
    assert verify(token, only(key.public), typ=None)[1] == b"{}"
    with pytest.raises(BadToken):
        verify(token, only(key.public), typ=QUERY_TYP)


def test_critical_extensions_are_refused() -> None:
    key = generate_key()
    head = b64url_encode(json.dumps(
        {"alg": key.alg, "kid": key.kid, "typ": QUERY_TYP, "crit": ["exp"], "exp": 1}).encode())
    body = b64url_encode(b"{}")
    sig = b64url_encode(key.sign(f"{head}.{body}".encode()))
    with pytest.raises(BadToken, match="crit"):
        verify(f"{head}.{body}.{sig}", only(key.public), typ=QUERY_TYP)


# -- garbage ---------------------------------------------------------------------------------------

GARBAGE: list[str | bytes | object] = [
    "", " ", ".", "..", "...", "a", "a.b", "a.b.c.d", "a..c",
    "!!!.e30.sig", "e30.!!!.sig", "e30.e30.!!!", "e30.e30.a",  # a: impossible length
    "å.ä.ö", "\x00.\x00.\x00", "eyJ\u200b.e30.e30",
    b"\xff\xfe.\x00.\x01", b"",
    raw_token({"alg": "EdDSA"}, b"{}"),  # no kid
    raw_token({"kid": "k"}, b"{}"),  # no alg
    raw_token({"alg": 1, "kid": "k"}, b"{}"),
    raw_token({"alg": "EdDSA", "kid": ["k"]}, b"{}"),
    raw_token({"alg": "EdDSA", "kid": "k", "typ": 5}, b"{}"),
    b64url_encode(b"[1,2]") + ".e30.AAAA",
    b64url_encode(b"null") + ".e30.AAAA",
    b64url_encode(b"not json") + ".e30.AAAA",
    b64url_encode(b'{"alg":"EdDSA","kid":"k"') + ".e30.AAAA",  # truncated JSON
    b64url_encode(b"\xff\xfe\xfd") + ".e30.AAAA",  # not UTF-8
    pytest.param(b64url_encode(b'{"alg":"EdDSA","kid":"\xdf"}') + ".e30.AAAA",
                 id="not-utf8-in-string"),
    b64url_encode(b'{"alg":"EdDSA","kid":"k"}') + ".e30.AA==",  # padding is not base64url
    pytest.param(b64url_encode(b'{"alg":"EdDSA","kid":"k"}') + ".e30+.AAAA",
                 id="payload-not-base64url"),
    "x" * 100_000,
    ".".join(["e30"] * 3000),
]


@pytest.mark.parametrize("token", GARBAGE)
def test_garbage_raises_bad_token(token: str | bytes) -> None:
    key = generate_key()
    with pytest.raises(BadToken):
        verify(token, lambda h: key.public, typ=None)
    with pytest.raises(BadToken):
        verify(token, lambda h: key.public, typ=QUERY_TYP)


def test_random_bytes_raise_only_bad_token() -> None:
    rng = random.Random(7515)
    key = generate_key()
    for _ in range(2000):
        n = rng.randrange(0, 200)
        token = bytes(rng.choice(b"AZaz09-_.=+/ \x00\xff") for _ in range(n))
        with pytest.raises(BadToken):
            verify(token, lambda h: key.public, typ=None)


@pytest.mark.parametrize("alg", ALGS)
def test_mutated_tokens_raise_only_jose_errors(alg: Alg) -> None:
    """Every one-character change of a good token is refused with a JoseError, or is a
    change base64url cannot see (the spare low bits of a final character)."""
    rng = random.Random(alg)
    key = generate_key(alg)
    token = sign(msgspec.json.encode(claims()), key, typ=QUERY_TYP)
    good = verify(token, only(key.public), typ=QUERY_TYP)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ !"
    for _ in range(1500):
        i = rng.randrange(len(token))
        mutated = token[:i] + rng.choice(alphabet.replace(token[i], "")) + token[i + 1:]
        try:
            result = verify(mutated, only(key.public), typ=QUERY_TYP)
        except JoseError:
            continue
        assert result == good, mutated


def test_non_canonical_signature_encoding_is_refused() -> None:
    key = generate_key("EdDSA")
    head, body, sig = sign(b"{}", key, typ=QUERY_TYP).split(".")
    # 64 bytes -> 86 characters: the last one carries 2 bits and 4 spare bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    twin = alphabet[last ^ 0b0001]
    assert base64.urlsafe_b64decode(sig[:-1] + twin + "==") == b64url_decode(sig)
    with pytest.raises(BadToken):
        verify(f"{head}.{body}.{sig[:-1]}{twin}", only(key.public), typ=QUERY_TYP)


# -- JWKs and kids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_private_jwk_round_trip(alg: Alg) -> None:
    key = generate_key(alg)
    jwk = key.to_jwk()
    assert jwk["alg"] == alg and jwk["use"] == "sig" and jwk["kid"] == key.kid and "d" in jwk
    again = private_key_from_jwk(json.loads(json.dumps(jwk)))
    assert again.kid == key.kid and again.alg == alg
    assert again.to_jwk() == jwk
    token = sign(b"{}", again, typ=QUERY_TYP)
    verify(token, only(key.public), typ=QUERY_TYP)


@pytest.mark.parametrize("alg", ALGS)
def test_public_jwk_round_trip(alg: Alg) -> None:
    key = generate_key(alg)
    jwk = key.public.to_jwk()
    assert "d" not in jwk
    public = public_key_from_jwk(jwk)
    assert public.kid == key.kid and public.alg == alg and public.to_jwk() == jwk
    verify(sign(b"{}", key, typ=QUERY_TYP), only(public), typ=QUERY_TYP)


@pytest.mark.parametrize("alg", ALGS)
def test_kid_is_the_rfc7638_thumbprint(alg: Alg) -> None:
    key = generate_key(alg)
    assert key.kid == rfc_key(key.public.to_jwk()).thumbprint()
    # A JWK without kid gets the same thumbprint; a given kid is kept as it is.
    bare = {k: v for k, v in key.public.to_jwk().items() if k in ("kty", "crv", "x", "y")}
    assert public_key_from_jwk(bare).kid == key.kid
    assert public_key_from_jwk({**bare, "kid": "region-2026-01"}).kid == "region-2026-01"


def test_pyjwt_and_joserfc_keys_import_into_ours() -> None:
    rfc_key = JWKRegistry.generate_key("OKP", "Ed25519", private=True)
    ours = private_key_from_jwk(rfc_key.as_dict(private=True))
    assert ours.kid == rfc_key.thumbprint()
    ec = JWKRegistry.generate_key("EC", "P-256", private=True)
    ours_ec = private_key_from_jwk(ec.as_dict(private=True))
    assert ours_ec.alg == "ES256" and ours_ec.kid == ec.thumbprint()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kty": "RSA"}, "unsupported JWK"),
        ({"crv": "P-384"}, "unsupported JWK"),
        ({"crv": "Ed448"}, "unsupported JWK"),
        ({"alg": "ES256"}, "does not fit"),
        ({"x": "AAAA"}, "32 bytes"),
        ({"x": "!!"}, "base64url"),
        ({"x": None}, "missing"),
        ({"kid": 7}, "kid must be a string"),
    ],
)
def test_bad_public_jwk(change: dict[str, object], message: str) -> None:
    jwk: dict[str, object] = {**generate_key("EdDSA").public.to_jwk(), **change}
    jwk = {k: v for k, v in jwk.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        public_key_from_jwk(jwk)


def test_ec_point_off_the_curve_is_refused() -> None:
    jwk = generate_key("ES256").public.to_jwk()
    y = int.from_bytes(b64url_decode(jwk["y"]), "big")
    bad = {**jwk, "y": b64url_encode(((y + 1) % 2**256).to_bytes(32, "big"))}
    with pytest.raises(ValueError, match="not on the curve"):
        public_key_from_jwk(bad)


@pytest.mark.parametrize("alg", ALGS)
def test_private_jwk_whose_d_does_not_match(alg: Alg) -> None:
    jwk = {**generate_key(alg).to_jwk(), "d": generate_key(alg).to_jwk()["d"]}
    with pytest.raises(ValueError, match="does not belong"):
        private_key_from_jwk(jwk)


def test_private_ec_jwk_with_the_other_y_is_refused() -> None:
    p256 = 2**256 - 2**224 + 2**192 + 2**96 - 1
    jwk = generate_key("ES256").to_jwk()
    y = int.from_bytes(b64url_decode(jwk["y"]), "big")
    mirrored = {**jwk, "y": b64url_encode((p256 - y).to_bytes(32, "big"))}
    public_key_from_jwk(mirrored)  # a valid point: (x, -y)
    with pytest.raises(ValueError):
        private_key_from_jwk(mirrored)


def test_private_jwk_without_d() -> None:
    with pytest.raises(ValueError, match="'d'"):
        private_key_from_jwk(generate_key().public.to_jwk())


@given(st.binary(max_size=300))
def test_base64url_round_trips_every_byte_string(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data
    assert b64url_decode(b64url_encode(data).encode("ascii")) == data


@pytest.mark.parametrize("text", [
    "YQ==",        # padding
    "YQ=",
    "a+b/",        # the standard alphabet, not base64url
    "YWJj ZA",     # whitespace
    "YWJj\nZA",
    "YWJjZ",       # a length no encoding has (4k + 1)
    "YR",          # spare bits set: 'R' is not the canonical last character of "a"
    "YWJ",         # ... and 'J' of "ab" ('I' is): one token, one spelling
    "YWJj\u00e9",  # not ASCII
])
def test_base64url_refuses_what_rfc7515_does_not_allow(text: str) -> None:
    with pytest.raises(BadToken):
        b64url_decode(text.encode("utf-8"))


@pytest.mark.parametrize("document", [
    b'{"a": 1, "a": 1}',
    b'{"a": {"b": 1, "b": 2}}',
    b'{"a": [{"c": 1}, {"c": 1, "c": 2}]}',
    b'{"\\u0061": 1, "a": 2}',  # the same name, spelt with an escape
])
def test_a_member_named_twice_is_refused_anywhere(document: bytes) -> None:
    with pytest.raises(DuplicateMember):
        reject_duplicate_members(document)


@pytest.mark.parametrize("document", [b"[]", b"1", b"{", b'{"a": 1} x', b"\xff"])
def test_what_is_no_json_object_is_a_bad_token_not_a_duplicate(document: bytes) -> None:
    with pytest.raises(BadToken) as caught:
        reject_duplicate_members(document)
    assert not isinstance(caught.value, DuplicateMember)


def test_a_header_naming_alg_twice_is_refused_whichever_comes_last() -> None:
    key = generate_key()
    body = b64url_encode(b"{}")
    for first, last in (("none", key.alg), (key.alg, "none")):
        head = b64url_encode(
            f'{{"alg":"{first}","kid":"{key.kid}","typ":"{QUERY_TYP}","alg":"{last}"}}'.encode())
        sig = b64url_encode(key.sign(f"{head}.{body}".encode()))
        with pytest.raises(BadToken, match="alg"):
            verify(f"{head}.{body}.{sig}", only(key.public), typ=QUERY_TYP)


@pytest.mark.parametrize("crit", ["[]", "null", '["exp"]'])
def test_crit_is_refused_even_empty(crit: str) -> None:
    key = generate_key()
    head = b64url_encode(
        f'{{"alg":"{key.alg}","kid":"{key.kid}","typ":"{QUERY_TYP}","crit":{crit}}}'.encode())
    body = b64url_encode(b"{}")
    sig = b64url_encode(key.sign(f"{head}.{body}".encode()))
    with pytest.raises(BadToken, match="crit"):
        verify(f"{head}.{body}.{sig}", only(key.public), typ=QUERY_TYP)
