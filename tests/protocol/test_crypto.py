"""The primitive wrappers: sizes, failure modes and the ffdhe2048 group."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal, getcontext

import pytest

from pmirs.errors import InvalidMessage
from pmirs.protocol import crypto

pytestmark = pytest.mark.filterwarnings("ignore:Diffie-Hellman over finite fields")


def test_ffdhe2048_prime_matches_rfc7919_formula() -> None:
    getcontext().prec = 800
    e = Decimal(1).exp()
    floor_term = int((Decimal(2) ** 1918 * e).to_integral_value(rounding=ROUND_FLOOR))
    p = 2**2048 - 2**1984 + (floor_term + 560316) * 2**64 - 1
    assert p == crypto.FFDHE2048_P
    assert crypto.FFDHE2048_G == 2


@pytest.mark.parametrize("y", [0, 1, crypto.FFDHE2048_P - 1, crypto.FFDHE2048_P, 2**2048 - 1])
def test_ffdhe2048_rejects_degenerate_public_values(y: int) -> None:
    private, _ = crypto.ffdhe2048_generate()
    with pytest.raises(InvalidMessage):
        crypto.ffdhe2048_exchange(private, y.to_bytes(256, "big"))


def test_ffdhe2048_agreement_and_wrong_size() -> None:
    a, a_pub = crypto.ffdhe2048_generate()
    b, b_pub = crypto.ffdhe2048_generate()
    assert crypto.ffdhe2048_exchange(a, b_pub) == crypto.ffdhe2048_exchange(b, a_pub)
    with pytest.raises(InvalidMessage):
        crypto.ffdhe2048_exchange(a, b_pub[1:])


def test_x25519_agreement_and_low_order_point() -> None:
    a, b = crypto.x25519_generate(), crypto.x25519_generate()
    shared = crypto.x25519_exchange(a, crypto.x25519_public(b))
    assert shared == crypto.x25519_exchange(b, crypto.x25519_public(a))
    with pytest.raises(InvalidMessage):
        crypto.x25519_exchange(a, bytes(32))  # low-order point: all-zero shared secret
    with pytest.raises(InvalidMessage):
        crypto.x25519_exchange(a, bytes(31))


def test_cbc_hmac_round_trip_and_tamper() -> None:
    enc, mac, iv = bytes(16), bytes(range(32)), bytes(range(16))
    ct, tag = crypto.cbc_hmac_encrypt(enc, mac, iv, b"secret", b"header")
    assert crypto.cbc_hmac_decrypt(enc, mac, iv, ct, tag, b"header") == b"secret"
    for args in [
        (enc, mac, iv, ct, tag, b"Header"),
        (enc, mac, bytes(16), ct, tag, b"header"),
        (enc, mac, iv, ct[:-1] + bytes([ct[-1] ^ 1]), tag, b"header"),
        (enc, mac, iv, ct, tag[:-1] + bytes([tag[-1] ^ 1]), b"header"),
        (enc, bytes(32), iv, ct, tag, b"header"),
        (enc, mac, iv, ct, tag[:16], b"header"),
    ]:
        with pytest.raises(InvalidMessage):
            crypto.cbc_hmac_decrypt(*args)


def test_gcm_round_trip_and_tamper() -> None:
    key, nonce = bytes(16), bytes(12)
    ct = crypto.aes_gcm_encrypt(key, nonce, b"secret", b"ad")
    assert crypto.aes_gcm_decrypt(key, nonce, ct, b"ad") == b"secret"
    for args in [(key, nonce, ct, b"AD"), (key, bytes(11), ct, b"ad"), (key, nonce, ct[:10], b"ad")]:
        with pytest.raises(InvalidMessage):
            crypto.aes_gcm_decrypt(*args)


def test_caller_mistakes_are_value_or_type_errors() -> None:
    with pytest.raises(ValueError):
        crypto.cbc_hmac_encrypt(bytes(15), bytes(32), bytes(16), b"x")
    with pytest.raises(ValueError):
        crypto.aes_gcm_encrypt(bytes(16), bytes(16), b"x")
    with pytest.raises(TypeError):
        crypto.hmac_sha256(bytes(32), "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        crypto.EphemeralKey("rsa")


def test_ed25519_sign_verify_and_pem() -> None:
    key = crypto.ed25519_generate()
    public = crypto.ed25519_public(key)
    signature = crypto.ed25519_sign(key, b"data")
    crypto.ed25519_verify(public, signature, b"data")
    with pytest.raises(InvalidMessage):
        crypto.ed25519_verify(public, signature, b"Data")
    with pytest.raises(InvalidMessage):
        crypto.ed25519_verify(public[:31], signature, b"data")
    assert crypto.ed25519_private_from_pem(crypto.ed25519_private_to_pem(key)) == key
    assert crypto.ed25519_public_from_pem(crypto.ed25519_public_to_pem(public)) == public
    with pytest.raises(ValueError):
        crypto.ed25519_private_from_pem(b"not a pem")


def test_keyed_id_and_hkdf_labels() -> None:
    assert crypto.keyed_id(b"k" * 32, b"x") != crypto.keyed_id(b"j" * 32, b"x")
    assert len(crypto.keyed_id(b"k" * 32, b"x")) == 64
    a = crypto.hkdf_sha256(b"ikm", 16, salt=b"s", info=b"a")
    assert a != crypto.hkdf_sha256(b"ikm", 16, salt=b"s", info=b"b")
    assert crypto.constant_time_equal("ab", "ab") and not crypto.constant_time_equal(b"ab", b"ac")
