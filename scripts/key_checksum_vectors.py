#!/usr/bin/env python3
"""Reference implementation of echorelay API key checksums and validation
(docs/FORMATS.md, part 2; mirrors echorelay-core/src/keys.rs).

  python3 scripts/key_checksum_vectors.py               # print the test vectors
  python3 scripts/key_checksum_vectors.py --check KEY   # validate KEY like parse_key
"""
import hashlib
import sys
import zlib

BASE62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIXES = {b"er_live_": "live", b"er_test_": "test"}
KEY_LEN, BODY_LEN = 47, 41  # 8 prefix + 33 random (+ 6 checksum)


def checksum(body: bytes) -> bytes:
    """CRC-32/ISO-HDLC of body, as 6 base62 digits, most significant first."""
    v, out = zlib.crc32(body), bytearray()
    for _ in range(6):
        v, r = divmod(v, 62)
        out.insert(0, BASE62[r])
    return bytes(out)


def parse_key(s: str) -> str:
    """Returns 'live' or 'test', or raises ValueError(category), in parse_key's order."""
    b = s.encode("utf-8")
    env = PREFIXES.get(b[:8])
    if env is None:
        raise ValueError("WrongPrefix")
    if len(b) != KEY_LEN:  # compared in bytes; reported in characters
        raise ValueError(f"WrongLength({len(s)})")
    for i in range(8, KEY_LEN):
        if b[i] not in BASE62:
            raise ValueError(f"BadCharacter({i})")
    if checksum(b[:BODY_LEN]) != b[BODY_LEN:]:
        raise ValueError("BadChecksum")
    return env


def hint_of(key: str) -> str:
    return key[:8] + "\u2026" + key[-4:]


VECTORS = [
    "er_live_" + "0" * 33,
    "er_test_" + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg",
    "er_live_" + "0123456789ABCDEFGHIJKLMNOPQRSTUVW",
    "er_test_" + "z" * 33,
    "er_live_" + "k" * 33,  # CRC < 62**4: checksum starts with "00"
]

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        try:
            print("ok:", parse_key(sys.argv[2]))
        except ValueError as e:
            sys.exit(f"rejected: {e}")
    elif len(sys.argv) == 1:
        assert zlib.crc32(b"123456789") == 0xCBF43926  # CRC-32/ISO-HDLC check value
        for body in VECTORS:
            b = body.encode()
            key = body + checksum(b).decode()
            assert parse_key(key) in ("live", "test")
            print(f"body      {body}\ncrc32     0x{zlib.crc32(b):08x} = {zlib.crc32(b)}")
            print(f"checksum  {checksum(b).decode()}\nkey       {key}\nhint      {hint_of(key)}")
            print(f"sha256    {hashlib.sha256(key.encode()).hexdigest()}\n")
    else:
        sys.exit(__doc__)
