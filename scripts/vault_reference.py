#!/usr/bin/env python3
"""Reference implementation of the echorelay vault format (docs/FORMATS.md,
part 1; mirrors echorelay-core/src/vault.rs). Needs the `cryptography`
package (AESGCM).

  python3 scripts/vault_reference.py vectors
  python3 scripts/vault_reference.py selftest
  python3 scripts/vault_reference.py seal KEY PROJECT RECORD FIELD PLAINTEXT [NONCE_HEX]
  python3 scripts/vault_reference.py open KEY PROJECT RECORD FIELD ERV1_TEXT

KEY is SECRET_KEY text (64 hex characters or base64 of 32 bytes). PLAINTEXT
is taken as UTF-8 text; `open` prints the plaintext as hex and, if it is
UTF-8, as text. NONCE_HEX is for test vectors only: never fix a nonce in
production.
"""
import base64
import hashlib
import os
import string
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
TEXT_PREFIX = "erv1:"
KEY_ID_DOMAIN = b"echorelay.vault.key-id.v1"
AAD_DOMAIN = b"echorelay/v1"
NONCE_LEN, TAG_LEN = 12, 16
HEADER_LEN = 1 + 4 + NONCE_LEN
MIN_LEN = HEADER_LEN + TAG_LEN  # 33
STD = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
URL = STD[:62] + "-_"
HEX = set(string.hexdigits)
ASCII_WS = " \t\n\f\r"  # Rust's u8::is_ascii_whitespace (no \v)


class VaultError(Exception):
    """args[0] is the category: InvalidSecretKey, Malformed,
    UnsupportedVersion, UnknownKey, Decrypt, Encrypt."""


def b64decode_strict(s: str, alphabet: str, allow_padding: bool) -> bytes:
    """Decodes like the `base64` crate 0.22 with decode_allow_trailing_bits
    = false and padding mode Indifferent (allow_padding) or RequireNone."""
    data = s.rstrip("=")
    pad = len(s) - len(data)
    if any(c not in alphabet for c in data):
        raise ValueError("invalid character")
    if len(data) % 4 == 1:
        raise ValueError("invalid length")
    if pad and (not allow_padding or pad > (4 - len(data) % 4) % 4):
        raise ValueError("invalid padding")
    std = data.translate(str.maketrans("-_", "+/")) if alphabet == URL else data
    out = base64.b64decode(std + "=" * ((4 - len(std) % 4) % 4), validate=True)
    # Canonical only: the unused low bits of the last character must be zero.
    if base64.b64encode(out).decode().rstrip("=") != std:
        raise ValueError("non-canonical trailing bits")
    return out


def parse_secret_key(text: str) -> bytes:
    """SecretKey::parse. Returns the 32 key bytes, used as the AES-256 key as is."""
    s = text.strip(ASCII_WS)
    if not s or len(s.encode()) > 88:
        raise VaultError("InvalidSecretKey", "empty or too long")
    all_hex = all(c in HEX for c in s)
    if all_hex and len(s) == 64:
        return bytes.fromhex(s)
    if all_hex and len(s) != 43:
        raise VaultError("InvalidSecretKey", "hex key has the wrong length")
    alphabet = URL if ("-" in s or "_" in s) else STD
    try:
        key = b64decode_strict(s, alphabet, allow_padding=True)
    except ValueError:
        raise VaultError("InvalidSecretKey", "bad base64") from None
    if len(key) != 32:
        raise VaultError("InvalidSecretKey", "base64 does not decode to 32 bytes")
    return key


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(KEY_ID_DOMAIN + key).digest()[:4]


def aad(project: str, record: str, field: str) -> bytes:
    out = bytearray(AAD_DOMAIN)
    for part in (project, record, field):
        b = part.encode("utf-8")
        if len(b) > 0xFFFFFFFF:
            raise ValueError("context part longer than u32::MAX bytes")
        out += struct.pack(">I", len(b)) + b
    return bytes(out)


def seal(key: bytes, plaintext: bytes, ctx, nonce: bytes = None) -> bytes:
    """Returns the binary form: version || key id || nonce || ciphertext || tag."""
    try:
        a = aad(*ctx)
    except ValueError:
        raise VaultError("Encrypt") from None
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    assert len(nonce) == NONCE_LEN
    return bytes([VERSION]) + key_id(key) + nonce + AESGCM(key).encrypt(nonce, plaintext, a)


def from_bytes(data: bytes):
    """Ciphertext::from_bytes: (key_id, nonce, ciphertext||tag). Checks in Rust's order."""
    if not data:
        raise VaultError("Malformed", "empty input")
    if data[0] != VERSION:
        raise VaultError("UnsupportedVersion", data[0])
    if len(data) < MIN_LEN:
        raise VaultError("Malformed", "too short")
    return data[1:5], data[5:HEADER_LEN], data[HEADER_LEN:]


def open_(keys, data: bytes, ctx) -> bytes:
    """AesGcmVault::open over a keyring `keys` (list of 32-byte keys)."""
    kid, nonce, sealed = from_bytes(data)
    try:
        a = aad(*ctx)
    except ValueError:
        raise VaultError("Decrypt") from None
    candidates = [k for k in keys if key_id(k) == kid]
    if not candidates:
        raise VaultError("UnknownKey", kid.hex())
    for k in candidates:
        try:
            return AESGCM(k).decrypt(nonce, sealed, a)
        except Exception:
            pass
    raise VaultError("Decrypt")


def to_text(data: bytes) -> str:
    return TEXT_PREFIX + base64.urlsafe_b64encode(data).decode().rstrip("=")


def from_text(text: str) -> bytes:
    """Ciphertext::from_text: fixed prefix, strict unpadded base64url, then from_bytes."""
    if not text.startswith(TEXT_PREFIX):
        raise VaultError("Malformed", 'missing "erv1:" prefix')
    try:
        data = b64decode_strict(text[len(TEXT_PREFIX):], URL, allow_padding=False)
    except ValueError:
        raise VaultError("Malformed", "invalid base64url") from None
    from_bytes(data)
    return data


TEST_KEY_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
VECTORS = [  # (context, plaintext, nonce)
    (("prj_00112233445566778899aabbccddeeff", "tgt_0123456789abcdef0123456789abcdef",
      "target.auth.bearer_token"), b"s3cr3t-t0ken", bytes(range(12))),
    (("accounts", "usr_fedcba9876543210fedcba9876543210", "account.totp_seed"),
     b"12345678901234567890", bytes.fromhex("cafebabefacedbaddecaf888")),
    (("pr\u00f6ject", "r", "f"), b"", bytes(12)),
]


def vectors():
    key = parse_secret_key(TEST_KEY_HEX)
    print(f"key         {key.hex()}\nkey id      {key_id(key).hex()}\n")
    for ctx, pt, nonce in VECTORS:
        data = seal(key, pt, ctx, nonce)
        assert open_([key], from_text(to_text(data)), ctx) == pt
        print(f"project     {ctx[0]!r}\nrecord      {ctx[1]!r}\nfield       {ctx[2]!r}")
        print(f"aad         {aad(*ctx).hex()}\nnonce       {nonce.hex()}")
        print(f"plaintext   {pt.hex()} ({pt!r})")
        print(f"binary      {data.hex()}\n  ct        {data[HEADER_LEN:-TAG_LEN].hex()}")
        print(f"  tag       {data[-TAG_LEN:].hex()}\ntext        {to_text(data)}\n")


def selftest():
    def rejects(f, *a, cat):
        try:
            f(*a)
        except VaultError as e:
            assert e.args[0] == cat, (a, e.args)
            return
        raise AssertionError(f"accepted {a!r}")

    k = bytes(range(32))
    for form in (TEST_KEY_HEX, TEST_KEY_HEX.upper(), f"  {TEST_KEY_HEX}\n",
                 base64.b64encode(k).decode(), base64.b64encode(k).decode().rstrip("="),
                 base64.urlsafe_b64encode(k).decode(), "\t" + base64.b64encode(k).decode() + "\r\n"):
        assert parse_secret_key(form) == k, form
    fb = bytes([0xFB] * 32)
    assert parse_secret_key(base64.b64encode(fb).decode()) == fb
    assert parse_secret_key(base64.urlsafe_b64encode(fb).decode().rstrip("=")) == fb
    assert parse_secret_key("a" * 42 + "A") == base64.b64decode("a" * 42 + "A=")  # 43 hex digits: base64
    mixed = "-+" + base64.b64encode(fb).decode()[2:]
    for bad in ("", "   \n", "01" * 31, "01" * 33, "01" * 64, base64.b64encode(bytes(31)).decode(),
                base64.b64encode(bytes(33)).decode(), "not a key at all", TEST_KEY_HEX[:63] + "z",
                "A" * 10_000, mixed, TEST_KEY_HEX[:32] + " " + TEST_KEY_HEX[32:],
                "a" * 42 + "B",  # non-zero trailing bits
                base64.b64encode(k).decode() + "=",  # too much padding
                "\v" + TEST_KEY_HEX):  # \v is not trimmed
        rejects(parse_secret_key, bad, cat="InvalidSecretKey")
    assert aad("ab", "c", "d") == b"echorelay/v1\0\0\0\x02ab\0\0\0\x01c\0\0\0\x01d"
    ctx = ("acme", "endpoint-1", "bearer_token")
    data = seal(k, b"payload", ctx)
    text = to_text(data)
    assert open_([k], from_text(text), ctx) == b"payload"
    for bad_ctx in (("other",) + ctx[1:], (ctx[0], "endpoint-2", ctx[2]), ctx[:2] + ("password",)):
        rejects(open_, [k], data, bad_ctx, cat="Decrypt")
    rejects(open_, [bytes(32)], data, ctx, cat="UnknownKey")
    for pos in range(len(data)):
        tampered = data[:pos] + bytes([data[pos] ^ 1]) + data[pos + 1:]
        try:
            open_([k], tampered, ctx)
            raise AssertionError(f"flip at {pos} accepted")
        except VaultError:
            pass
    rejects(from_text, "erv2:AAAA", cat="Malformed")
    rejects(from_text, " " + text, cat="Malformed")
    rejects(from_text, text + "=", cat="Malformed")
    rejects(from_text, "erv1:AQ", cat="Malformed")
    rejects(from_text, to_text(bytes([2]) + data[1:]), cat="UnsupportedVersion")
    rejects(from_bytes, bytes([1] + [0] * 32)[:32], cat="Malformed")
    from_bytes(bytes([1] + [0] * 32))
    print("selftest ok")


if __name__ == "__main__":
    cmd, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if cmd == "vectors" and not args:
        vectors()
    elif cmd == "selftest" and not args:
        selftest()
    elif cmd == "seal" and len(args) in (5, 6):
        nonce = bytes.fromhex(args[5]) if len(args) == 6 else None
        print(to_text(seal(parse_secret_key(args[0]), args[4].encode(), tuple(args[1:4]), nonce)))
    elif cmd == "open" and len(args) == 5:
        pt = open_([parse_secret_key(args[0])], from_text(args[4]), tuple(args[1:4]))
        print(pt.hex())
        try:
            print(pt.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    else:
        sys.exit(__doc__)
