#!/usr/bin/env python3
"""Writes the seed corpora and libFuzzer dictionaries of the cargo-fuzz
targets in fuzz/ (standard library only, deterministic).

    python3 scripts/fuzz_seeds.py            # (re)write the seeds
    python3 scripts/fuzz_seeds.py --check    # exit 1 if the files on disk differ

Output, relative to the repository root:

    fuzz/corpus/key_parse/seed-*          valid API keys and near-misses
    fuzz/corpus/ciphertext_decode/seed-*  well-formed and malformed ciphertexts
    fuzz/corpus/forwarded_for/seed-*      X-Forwarded-For lists, read and refused
    fuzz/corpus/lease_token/seed-*        queue lease tokens and near-misses
    fuzz/corpus/backup_manifest/seed-*    backup manifest envelopes (MAC under the fuzz key) and near-misses
    fuzz/key_parse.dict                   libFuzzer dictionaries
    fuzz/ciphertext_decode.dict
    fuzz/forwarded_for.dict
    fuzz/lease_token.dict

Only files named `seed-*` are removed and rewritten, so inputs that libFuzzer
added to the same directories (named by their SHA-1) are left alone.

Why seeds: `parse_key` rejects anything whose 6-character CRC-32 checksum is
wrong, so random input (almost) never reaches its accept path; the
ciphertext decoders need a version byte, a minimum length and canonical
base64 before they accept anything.

Formats mirrored here (keep in sync with echorelay-core):

* keys.rs: key = prefix ("er_live_" | "er_test_") + 33 base62 characters +
  checksum(first 41 bytes), where checksum = crc32fast::hash (CRC-32/ISO-HDLC,
  the same as zlib.crc32) written as 6 base62 digits, alphabet 0-9A-Za-z,
  most significant first, zero-padded. parse_key checks, in this order:
  prefix, byte length 47, ASCII alphanumeric after the prefix, checksum.
* vault.rs: binary ciphertext = version (1) + key id (4) + nonce (12) +
  body (N) + tag (16), at least 33 bytes; from_bytes checks the version
  byte before the length. Text = "erv1:" + base64url without padding
  (base64 0.22 URL_SAFE_NO_PAD: no '=', no trailing bits, so canonical).

* echorelay-http client.rs: parse_forwarded_for reads the entries of all
  lines (the fuzz target splits its input into lines at '\n') from the
  right, skipping trusted ones (the target trusts 10.0.0.0/8 and
  2001:db8::/32); an entry is an address with optional spaces/tabs, port
  (v4 "a:p", v6 "[a]:p"), brackets and IPv6 zone ("%z"); the first entry
  that is not an address is Malformed, the first untrusted one the client.

* queue.rs: a lease token is "lease_" + 32 lowercase hex digits of the job
  id + 32 lowercase hex digits of the nonce + "_" + the attempt in decimal
  (1 to 1000, no leading zero); anything else is InvalidToken, and an
  accepted token displays as exactly its input (docs/FORMATS.md, Part 4).

Before anything is written, every seed is re-checked with a second,
independent implementation (bitwise CRC-32, base62 decoding, a strict
base64url decoder) and the malformed seeds must fail for the expected reason.
"""
import argparse
import base64
import hashlib
import hmac
import json
import ipaddress
import pathlib
import random
import re
import sys
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
RNG_SEED = 0x6572_7631  # "erv1"; change only on purpose: it rewrites every seed

# --- keys.rs ---------------------------------------------------------------

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIXES = ("er_live_", "er_test_")
PREFIX_LEN, RANDOM_LEN, CHECKSUM_LEN = 8, 33, 6
KEY_LEN = PREFIX_LEN + RANDOM_LEN + CHECKSUM_LEN  # 47


def checksum(body: bytes) -> bytes:
    """keys.rs `checksum`: crc32fast::hash as u64, then 6 base62 digits
    filled from the last slot backwards (most significant digit first)."""
    v = zlib.crc32(body)
    out = ["0"] * CHECKSUM_LEN
    for i in reversed(range(CHECKSUM_LEN)):
        out[i] = BASE62[v % 62]
        v //= 62
    return "".join(out).encode()


def make_key(prefix: str, random_part: str) -> bytes:
    body = (prefix + random_part).encode()
    assert len(body) == PREFIX_LEN + RANDOM_LEN
    return body + checksum(body)


# --- vault.rs --------------------------------------------------------------

VERSION = 1
TEXT_PREFIX = b"erv1:"
HEADER_LEN = 1 + 4 + 12
TAG_LEN = 16
MIN_CIPHERTEXT_LEN = HEADER_LEN + TAG_LEN  # 33
# KeyId of the fuzz target's vault key, SecretKey::from_bytes([0x42; 32]):
# SHA-256("echorelay.vault.key-id.v1" || key)[..4]. Ciphertexts carrying it
# get past UnknownKey into AES-GCM decryption (and fail with Decrypt).
FUZZ_KEY_ID = hashlib.sha256(b"echorelay.vault.key-id.v1" + b"\x42" * 32).digest()[:4]


def ciphertext(key_id: bytes, nonce: bytes, body: bytes, tag: bytes, version=VERSION) -> bytes:
    assert len(key_id) == 4 and len(nonce) == 12 and len(tag) == TAG_LEN
    return bytes([version]) + key_id + nonce + body + tag


def to_text(ct: bytes) -> bytes:
    return TEXT_PREFIX + base64.urlsafe_b64encode(ct).rstrip(b"=")


# --- client.rs (X-Forwarded-For) --------------------------------------------


def xff_seeds():
    """Returns (accepted, refused): lists of (name, bytes, expected), the
    expected result a canonical address string or "Malformed"."""
    accepted = [
        ("client-v4", "198.51.100.7", "198.51.100.7"),
        ("client-past-proxies", "1.1.1.1, 198.51.100.7, 10.1.2.3, 10.0.0.9", "198.51.100.7"),
        ("client-v4-port", "198.51.100.7:5678, 10.1.2.3", "198.51.100.7"),
        ("client-v6-bracket-port", "[2001:db9::1]:443", "2001:db9::1"),
        ("client-v6-bracket", "[2001:db9::1], 2001:db8::5", "2001:db9::1"),
        ("client-v6-zone", "fe80::1%eth0", "fe80::1"),
        ("client-v6-bracket-zone-port", "[fe80::1%25eth0]:8080", "fe80::1"),
        ("client-mapped-v4", "::ffff:198.51.100.7", "198.51.100.7"),
        ("client-garbage-left", "unknown, _hidden,, 198.51.100.7", "198.51.100.7"),
        ("client-lines", "1.1.1.1\n2001:db8::5, 198.51.100.8\n10.0.0.1", "198.51.100.8"),
        ("client-spaces-tabs", " \t198.51.100.7 \t,\t10.1.1.1 ", "198.51.100.7"),
        ("all-trusted", "10.9.9.9, 10.1.1.1", "10.9.9.9"),
        ("all-trusted-v6", "[2001:db8::9]:1, 2001:db8::1", "2001:db8::9"),
        ("client-loopback-v6", "::1", "::1"),
    ]
    refused = [
        ("bad-word", "not-an-ip", "Malformed"),
        ("bad-unknown", "unknown", "Malformed"),
        ("missing-empty-input", "", None),  # no lines at all: Missing
        ("bad-trailing-comma", "198.51.100.7,", "Malformed"),
        ("bad-garbage-right", "198.51.100.7, garbage, 10.1.2.3", "Malformed"),
        ("bad-empty-second-line", "198.51.100.7\n", "Malformed"),
        ("bad-port-empty", "198.51.100.7:", "Malformed"),
        ("bad-port-too-big", "198.51.100.7:65536", "Malformed"),
        ("bad-port-sign", "198.51.100.7:+80", "Malformed"),
        ("bad-v4-brackets", "[198.51.100.7]", "Malformed"),
        ("bad-unclosed-bracket", "[2001:db9::1", "Malformed"),
        ("bad-bracket-no-colon", "[2001:db9::1]443", "Malformed"),
        ("bad-empty-zone", "fe80::1%", "Malformed"),
        ("bad-v4-zone", "198.51.100.7%eth0", "Malformed"),
        ("bad-leading-zero", "198.51.100.007", "Malformed"),
        ("bad-two-in-one", "1.2.3.4 5.6.7.8", "Malformed"),
    ]
    out_ok = [(n, t.encode(), want) for n, t, want in accepted]
    out_bad = [(n, t.encode(), want) for n, t, want in refused]
    return out_ok, out_bad


def xff_trusted(ip):
    return ip in ipaddress.ip_network("10.0.0.0/8") if ip.version == 4 else ip in ipaddress.ip_network("2001:db8::/32")


def xff_hop(entry):
    """Independent reading of one entry (ipaddress, regular expressions)."""
    e = entry.strip(" \t")
    m = re.fullmatch(r"\[([^\]]*)\](?::([0-9]{1,5}))?", e)
    if m:
        host, port, v6 = m.group(1), m.group(2), True
    elif m := re.fullmatch(r"([^:]*):([0-9]{1,5})", e):
        host, port, v6 = m.group(1), m.group(2), False
    else:
        host, port, v6 = e, None, ":" in e
    if port is not None and int(port) > 65535:
        return None
    if v6 and "%" in host:
        host, zone = host.split("%", 1)
        if not zone or not all(0x21 <= ord(c) <= 0x7E for c in zone):
            return None
    if not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
        return None
    try:
        ip = ipaddress.IPv6Address(host) if v6 else ipaddress.IPv4Address(host)
    except ValueError:
        return None
    if v6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


def xff_check(data: bytes):
    text = data.decode("utf-8")
    if text == "":
        return None  # Missing
    entries = [e for line in text.split("\n") for e in line.split(",")]
    leftmost = None
    for e in reversed(entries):
        ip = xff_hop(e)
        if ip is None:
            return "Malformed"
        if not xff_trusted(ip):
            return str(ip)
        leftmost = ip
    return str(leftmost)


# --- queue.rs (lease tokens) ------------------------------------------------

LEASE_PREFIX = "lease_"
MAX_ATTEMPTS = 1000
# Its own generator, so adding these seeds left the older ones unchanged.
LEASE_RNG_SEED = 0x6C65_6173  # "leas"
# docs/FORMATS.md §4.3
LEASE_VECTOR = "lease_00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0_7"


def lease_token(job: bytes, nonce: bytes, attempt: int) -> bytes:
    assert len(job) == 16 and len(nonce) == 16 and 1 <= attempt <= MAX_ATTEMPTS
    return f"{LEASE_PREFIX}{job.hex()}{nonce.hex()}_{attempt}".encode()


def lease_seeds():
    """Returns (accepted, refused): lists of (name, bytes, expected), the
    expected result "ok" or "InvalidToken" (or "NotUtf8": the target skips
    the input)."""
    rng = Rng(LEASE_RNG_SEED)
    accepted = []
    for attempt in (1, 2, 7, 9, 10, 25, 99, 100, 999, 1000):
        accepted.append((f"valid-attempt-{attempt}", lease_token(rng.bytes(16), rng.bytes(16), attempt), "ok"))
    accepted.append(("valid-zeros", lease_token(bytes(16), bytes(16), 1), "ok"))
    accepted.append(("valid-ones", lease_token(b"\xff" * 16, b"\xff" * 16, 1000), "ok"))
    accepted.append(("valid-formats-vector", LEASE_VECTOR.encode(), "ok"))
    v = LEASE_VECTOR
    body = v[len(LEASE_PREFIX):-2]  # the 64 hex digits
    refused = [
        ("empty", b""),
        ("prefix-only", b"lease_"),
        ("prefix-upper", ("Lease_" + v[6:]).encode()),
        ("prefix-dash", ("lease-" + v[6:]).encode()),
        ("no-prefix", v[6:].encode()),
        ("no-attempt", f"lease_{body}".encode()),
        ("empty-attempt", f"lease_{body}_".encode()),
        ("attempt-0", f"lease_{body}_0".encode()),
        ("attempt-leading-zero", f"lease_{body}_07".encode()),
        ("attempt-1001", f"lease_{body}_1001".encode()),
        ("attempt-5-digits", f"lease_{body}_10000".encode()),
        ("attempt-sign", f"lease_{body}_+7".encode()),
        ("attempt-two", f"lease_{body}_7_7".encode()),
        ("hex-63", f"lease_{body[1:]}_7".encode()),
        ("hex-65", f"lease_{body}0_7".encode()),
        ("hex-upper", f"lease_{body.upper()}_7".encode()),
        ("hex-one-upper", f"lease_{body[:-1]}F_7".encode()),
        ("hex-not-hex", f"lease_{body[:-1]}g_7".encode()),
        ("hex-multibyte-64-bytes", f"lease_{body[2:]}é_7".encode()),
        ("trailing-newline", (v + "\n").encode()),
        ("trailing-space", (v + " ").encode()),
        ("leading-space", (" " + v).encode()),
    ]
    refused = [(n, d, "InvalidToken") for n, d in refused]
    refused.append(("not-utf8", v.encode()[:20] + b"\xff" + v.encode()[21:], "NotUtf8"))
    return accepted, refused


LEASE_DICT = """\
# libFuzzer dictionary for fuzz_targets/lease_token.rs (written by
# scripts/fuzz_seeds.py). The valid tokens in corpus/lease_token/ reach the
# accept path; these tokens help mutations reach each refusal.
prefix="lease_"
sep="_"
attempt_max="1000"
attempt_over="1001"
attempt_zero="0"
hex_upper="ABCDEF"
hex_lower="abcdef"
utf8_2="\\xc3\\xa9"
"""


def lease_check(data: bytes) -> str:
    """Mirror of the fuzz target + LeaseToken::from_str, written as one
    regular expression and a range check."""
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return "NotUtf8"
    m = re.fullmatch(r"lease_([0-9a-f]{64})_([1-9][0-9]{0,3})", s)
    if m is None or int(m.group(2)) > MAX_ATTEMPTS:
        return "InvalidToken"
    # The target asserts that an accepted token displays as its input.
    job, nonce = bytes.fromhex(m.group(1)[:32]), bytes.fromhex(m.group(1)[32:])
    assert lease_token(job, nonce, int(m.group(2))) == data
    return "ok"


# --- generation ------------------------------------------------------------


class Rng:
    """Only getrandbits, whose output for a given integer seed is stable
    across Python 3 versions."""

    def __init__(self, seed):
        self.r = random.Random(seed)

    def below(self, n):
        while True:  # rejection sampling, no modulo bias
            x = self.r.getrandbits(n.bit_length())
            if x < n:
                return x

    def base62(self, n):
        return "".join(BASE62[self.below(62)] for _ in range(n))

    def bytes(self, n):
        return bytes(self.r.getrandbits(8) for _ in range(n))


def key_seeds(rng):
    """Returns (valid, invalid): lists of (name, bytes, expected result)."""
    valid = []
    for prefix in PREFIXES:
        env = prefix[3:7]
        for i in range(8):
            valid.append((f"valid-{env}-{i:02}", make_key(prefix, rng.base62(RANDOM_LEN)), env))
        # Edge bodies: lowest and highest characters, and the whole alphabet.
        valid.append((f"valid-{env}-all0", make_key(prefix, "0" * RANDOM_LEN), env))
        valid.append((f"valid-{env}-allz", make_key(prefix, "z" * RANDOM_LEN), env))
        offset = 0 if env == "live" else 29  # together: all 62 characters
        valid.append((f"valid-{env}-alphabet", make_key(prefix, BASE62[offset:offset + RANDOM_LEN]), env))
    live = valid[0][1]
    test = next(k for _, k, e in valid if e == "test")

    def replace(key, pos, new):
        b = bytearray(key)
        b[pos:pos + 1] = new
        return bytes(b)

    def other(c):  # a different base62 character
        return BASE62[(BASE62.index(chr(c)) + 1) % 62].encode()

    last = KEY_LEN - 1
    first_sum = KEY_LEN - CHECKSUM_LEN
    reversed_sum = live[:first_sum] + live[first_sum:][::-1]
    assert reversed_sum != live
    invalid = [
        ("bad-checksum-last-char", replace(live, last, other(live[last])), "BadChecksum"),
        ("bad-checksum-first-char", replace(test, first_sum, other(test[first_sum])), "BadChecksum"),
        # The checksum covers the prefix: swapping the environment breaks it.
        ("bad-checksum-prefix-swapped", b"er_test_" + live[PREFIX_LEN:], "BadChecksum"),
        ("bad-checksum-body-typo", replace(live, 20, other(live[20])), "BadChecksum"),
        ("bad-checksum-digits-reversed", reversed_sum, "BadChecksum"),
        # crc32 <= 0xFFFFFFFF = "4gfFC3" < 5 * 62**5: a valid checksum starts with 0..4.
        ("bad-checksum-out-of-range", live[:first_sum] + b"zzzzzz", "BadChecksum"),
        ("wrong-length-short", live[:-1], "WrongLength"),
        ("wrong-length-long", live + b"0", "WrongLength"),
        ("wrong-length-newline", live + b"\n", "WrongLength"),
        ("wrong-length-prefix-only", b"er_live_", "WrongLength"),
        ("wrong-prefix-prod", b"er_prod_" + live[PREFIX_LEN:], "WrongPrefix"),
        ("wrong-prefix-upper", b"ER_LIVE_" + live[PREFIX_LEN:], "WrongPrefix"),
        ("wrong-prefix-leading-space", b" " + live[:-1], "WrongPrefix"),
        ("empty", b"", "WrongPrefix"),
        ("bad-char-dash", replace(live, 10, b"-"), "BadCharacter"),
        ("bad-char-in-checksum", replace(test, last, b"_"), "BadCharacter"),
        # 'é' is 2 bytes: replacing one character makes 48 bytes (length is
        # checked in bytes first), replacing two keeps 47 bytes.
        ("non-ascii-48-bytes", replace(live, 12, "é".encode()), "WrongLength"),
        ("non-ascii-47-bytes", live[:12] + "é".encode() + live[14:], "BadCharacter"),
        # Not UTF-8 at all: the fuzz target returns before parse_key.
        ("not-utf8", replace(live, 12, b"\xff"), "NotUtf8"),
    ]
    return valid, invalid


def ciphertext_seeds(rng):
    """Returns (valid, invalid): lists of (name, bytes, (path, result)),
    path "bin" (Ciphertext::from_bytes on the raw input) or "text"
    (Ciphertext::from_text on the input as UTF-8), result "ok" or the
    rejection reason on that path. No seed is accepted by the other path."""
    valid, invalid = [], []
    bins = {}
    for n in (0, 1, 16, 64):
        for kid_name, kid in (("randkey", rng.bytes(4)), ("fuzzkey", FUZZ_KEY_ID)):
            ct = ciphertext(kid, rng.bytes(12), rng.bytes(n), rng.bytes(16))
            bins[(n, kid_name)] = ct
            valid.append((f"bin-n{n}-{kid_name}", ct, ("bin", "ok")))
            valid.append((f"text-n{n}-{kid_name}", to_text(ct), ("text", "ok")))
    # A binary ciphertext that is also valid UTF-8 (all ASCII): reaches
    # from_bytes' accept path and from_text's prefix check in one input.
    ascii_ct = ciphertext(b"kid0", b"nonce-nonce-", b"ascii body", b"tag-tag-tag-tag-")
    valid.append(("bin-ascii-also-utf8", ascii_ct, ("bin", "ok")))

    ct0 = bins[(0, "randkey")]
    ct1 = bins[(1, "fuzzkey")]
    txt1 = to_text(ct1)
    b64_1 = txt1[len(TEXT_PREFIX):]
    assert len(b64_1) % 4 != 1  # never for a canonical encoding
    invalid += [
        ("bin-empty", b"", ("bin", "empty input")),
        ("bin-version-only", b"\x01", ("bin", "too short")),
        ("bin-header-only", ct0[:HEADER_LEN], ("bin", "too short")),
        ("bin-one-short", ct0[:-1], ("bin", "too short")),
        ("bin-version-0", b"\x00" + ct0[1:], ("bin", "version 0")),
        ("bin-version-2", b"\x02" + ct0[1:], ("bin", "version 2")),
        ("bin-version-255", b"\xff" + ct1[1:], ("bin", "version 255")),
        ("text-empty-body", TEXT_PREFIX, ("text", "empty input")),
        ("text-one-short", to_text(ct0[:-1]), ("text", "too short")),
        ("text-version-2", to_text(b"\x02" + ct0[1:]), ("text", "version 2")),
        ("text-padded", txt1 + b"=" * (-len(b64_1) % 4), ("text", "invalid base64url")),
        ("text-trailing-bits", txt1[:-1] + bytes([B64URL[B64URL.index(txt1[-1]) | 1]]), ("text", "invalid base64url")),
        ("text-length-1-mod-4", txt1 + b"A" * ((1 - len(b64_1)) % 4), ("text", "invalid base64url")),
        ("text-leading-space", b" " + txt1, ("text", "missing prefix")),
        ("text-trailing-newline", txt1 + b"\n", ("text", "invalid base64url")),
        ("text-upper-prefix", b"ERV1:" + b64_1, ("text", "missing prefix")),
        ("text-erv2-prefix", b"erv2:" + b64_1, ("text", "missing prefix")),
        ("text-no-prefix", b64_1, ("text", "missing prefix")),
        ("text-bad-char", txt1[:10] + b"!" + txt1[11:], ("text", "invalid base64url")),
        ("text-non-ascii", txt1[:10] + "é".encode() + txt1[12:], ("text", "invalid base64url")),
    ]
    # Standard alphabet instead of URL-safe: find a ciphertext whose text
    # form has '-' or '_' and swap them.
    for _, ct in sorted(bins.items()):
        t = to_text(ct)
        if b"-" in t or b"_" in t:
            std = t.replace(b"-", b"+").replace(b"_", b"/")
            invalid.append(("text-standard-alphabet", std, ("text", "invalid base64url")))
            break
    else:
        raise AssertionError("no ciphertext text form contains '-' or '_'")
    return valid, invalid


KEY_DICT = """\
# libFuzzer dictionary for fuzz_targets/key_parse.rs (written by
# scripts/fuzz_seeds.py). The checksum cannot be guessed from tokens: the
# valid keys in corpus/key_parse/ are what reach the accept path.
prefix_live="er_live_"
prefix_test="er_test_"
prefix_stem="er_"
env_live="live_"
env_test="test_"
# Characters parse_key must reject after the prefix.
sep_dash="-"
sep_underscore="_"
# Multi-byte UTF-8 (the target skips non-UTF-8 input; byte mutations rarely
# produce valid sequences): length is checked in bytes, reported in chars.
utf8_2="\\xc3\\xa9"
utf8_3="\\xe2\\x82\\xac"
utf8_4="\\xf0\\x9f\\x94\\x91"
"""


XFF_DICT = """\
# libFuzzer dictionary for fuzz_targets/forwarded_for.rs (written by
# scripts/fuzz_seeds.py). The target trusts 10.0.0.0/8 and 2001:db8::/32.
sep_comma=","
sep_comma_space=", "
sep_line="\\x0a"
trusted_v4="10.0.0.1"
trusted_v6="2001:db8::1"
client_v4="198.51.100.7"
client_v6="2001:db9::1"
mapped="::ffff:"
bracket_open="["
bracket_close="]"
bracket_port="]:443"
port=":5678"
zone="%eth0"
unknown="unknown"
hidden="_hidden"
"""


def cipher_dict():
    def esc(b):
        return "".join(f"\\x{c:02x}" for c in b)

    kid_b64 = base64.urlsafe_b64encode(bytes([VERSION]) + FUZZ_KEY_ID[:2]).decode()
    return f"""\
# libFuzzer dictionary for fuzz_targets/ciphertext_decode.rs (written by
# scripts/fuzz_seeds.py).
text_prefix="erv1:"
# "erv1:" + base64url of version 1 and the first two key-id bytes of the
# fuzz vault's key (SecretKey::from_bytes([0x42; 32])).
text_prefix_fuzzkey="erv1:{kid_b64}"
text_prefix_version1="erv1:A"
# Binary header pieces.
version_1="\\x01"
version_2="\\x02"
header_fuzzkey="\\x01{esc(FUZZ_KEY_ID)}"
fuzz_key_id="{esc(FUZZ_KEY_ID)}"
# base64: URL-safe characters, and what the strict decoder must reject.
b64_dash="-"
b64_underscore="_"
b64_pad="="
b64_pad2="=="
b64_plus="+"
b64_slash="/"
"""


# --- independent re-check --------------------------------------------------


def crc32_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def parse_key_check(data: bytes) -> str:
    """Mirror of the fuzz target + parse_key, written without checksum():
    decodes the 6 base62 digits to an integer and compares it to the CRC."""
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return "NotUtf8"
    if s.startswith("er_live_"):
        env = "live"
    elif s.startswith("er_test_"):
        env = "test"
    else:
        return "WrongPrefix"
    if len(data) != 47:
        return "WrongLength"
    if not all(c < 0x80 and chr(c).isalnum() for c in data[8:]):
        return "BadCharacter"
    value = 0
    for c in s[41:]:
        value = value * 62 + BASE62.index(c)
    if value != crc32_bitwise(data[:41]):
        return "BadChecksum"
    return env


B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64url_strict(s: bytes):
    """Strict unpadded base64url decoder, bit by bit; None if invalid."""
    if len(s) % 4 == 1:
        return None
    bits = "".join(format(B64URL.index(c), "06b") if c in B64URL else "!" for c in s)
    if "!" in bits:
        return None
    whole, rest = divmod(len(bits), 8)
    if "1" in bits[whole * 8:]:
        return None  # non-zero trailing bits
    return bytes(int(bits[i * 8:i * 8 + 8], 2) for i in range(whole))


def from_bytes_check(b: bytes) -> str:
    if not b:
        return "empty input"
    if b[0] != 1:
        return f"version {b[0]}"
    if len(b) < 33:
        return "too short"
    return "ok"


def from_text_check(data: bytes):
    """None if the fuzz target does not try the text path (not UTF-8)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not data.startswith(b"erv1:"):
        return "missing prefix"
    raw = b64url_strict(data[5:])
    if raw is None:
        return "invalid base64url"
    return from_bytes_check(raw)


def self_check(key_valid, key_invalid, ct_valid, ct_invalid, xff_ok=(), xff_bad=(), lease=()):
    for name, data, want in lease:
        got = lease_check(data)
        assert got == want, f"lease_token seed {name}: expected {want}, got {got}"
    for name, data, want in list(xff_ok) + list(xff_bad):
        got = xff_check(data)
        assert got == want, f"forwarded_for seed {name}: expected {want}, got {got}"
    assert crc32_bitwise(b"123456789") == 0xCBF43926 == zlib.crc32(b"123456789")
    for name, key, env in key_valid:
        got = parse_key_check(key)
        assert got == env, f"key seed {name}: expected {env}, got {got}"
        assert len(key) == KEY_LEN and key.isascii()
    for name, data, reason in key_invalid:
        got = parse_key_check(data)
        assert got == reason, f"key near-miss {name}: expected {reason}, got {got}"
    for name, data, (path, want) in ct_valid + ct_invalid:
        got = {"bin": from_bytes_check(data), "text": from_text_check(data)}
        assert got[path] == want, f"ciphertext seed {name}: {path} expected {want}, got {got[path]}"
        other = "text" if path == "bin" else "bin"
        assert got[other] != "ok", f"ciphertext seed {name}: also accepted by {other}"
        if path == "text" and want == "ok":
            # The fuzz target asserts to_text() == input for accepted text.
            assert to_text(b64url_strict(data[5:])) == data, name
    names = [n for n, _, _ in key_valid + key_invalid + ct_valid + ct_invalid]
    names += [n for n, _, _ in list(xff_ok) + list(xff_bad)]
    lease_names = [n for n, _, _ in lease]
    assert len(lease_names) == len(set(lease_names)), "duplicate lease seed names"
    assert len(names) == len(set(names)), "duplicate seed names"


# --- backup manifests ------------------------------------------------------
#
# backup/manifest.rs: the plaintext of manifest.age is the envelope
#   {"format":"echorelay.backup-envelope.v1","manifest":<manifest JSON text>,
#    "mac":{"key_id":<8 hex>,"tag":<64 hex>}}
# tag = HMAC-SHA256(K, b"echorelay.backup.manifest.v1\0" + manifest text),
# K = HKDF-SHA256(ikm = SECRET_KEY, no salt, info
# b"echorelay.backup.manifest.key.v1"), key_id = the vault key id. The fuzz
# target's keyring is SecretKey::from_bytes([0x42; 32]).

MANIFEST_SECRET = b"\x42" * 32


def hkdf_sha256(ikm: bytes, info: bytes, length=32) -> bytes:
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


def manifest_envelope(manifest_text: str, secret=MANIFEST_SECRET, fmt="echorelay.backup-envelope.v1") -> bytes:
    key = hkdf_sha256(secret, b"echorelay.backup.manifest.key.v1")
    key_id = hashlib.sha256(b"echorelay.vault.key-id.v1" + secret).digest()[:4].hex()
    tag = hmac.new(key, b"echorelay.backup.manifest.v1\0" + manifest_text.encode(), hashlib.sha256).hexdigest()
    env = {"format": fmt, "manifest": manifest_text, "mac": {"key_id": key_id, "tag": tag}}
    return json.dumps(env, separators=(",", ":")).encode()


def manifest_text(id_="20261205T030000Z-deadbeef", objects=None, fmt="echorelay.backup.v1", heads=None) -> str:
    if objects is None:
        objects = [{"name": "snapshot", "path": f"backups/{id_}/snapshot.age", "size": 1234,
                    "sha256": "ab" * 32, "plaintext_size": 1000}]
    m = {"format": fmt, "id": id_, "created_at": "2026-12-05T03:00:00Z", "echorelay_version": "0.1.0",
         "store": "postgres", "schema_version": 5, "recipients": ["cd" * 32], "objects": objects,
         "audit_heads": heads if heads is not None else [{"chain": None, "seq": 7, "hash": "ef" * 32},
                                                          {"chain": "prj_00000000000000000000000000000000", "seq": 1, "hash": "01" * 32}]}
    return json.dumps(m, separators=(",", ":"))


def manifest_seeds():
    two = [{"name": "snapshot", "path": "backups/20261205T030000Z-deadbeef/snapshot.age", "size": 10,
            "sha256": "00" * 32, "plaintext_size": 1},
           {"name": "pg_dump", "path": "backups/20261205T030000Z-deadbeef/pg_dump.age", "size": 2 ** 40,
            "sha256": "ff" * 32, "plaintext_size": 2 ** 40 - 200}]
    accepted = [
        ("valid-one-object", manifest_envelope(manifest_text()), "ok"),
        ("valid-two-objects", manifest_envelope(manifest_text(objects=two)), "ok"),
        ("valid-no-heads", manifest_envelope(manifest_text(heads=[])), "ok"),
    ]
    good = manifest_text()
    refused = [
        ("empty", b"", "Corrupt"),
        ("not-json", b"manifest", "Corrupt"),
        ("envelope-v2", manifest_envelope(good, fmt="echorelay.backup-envelope.v2"), "UnsupportedFormat"),
        ("manifest-v9", manifest_envelope(manifest_text(fmt="echorelay.backup.v9")), "UnsupportedFormat"),
        ("wrong-key", manifest_envelope(good, secret=b"\x43" * 32), "Corrupt"),
        ("edited-after-mac", manifest_envelope(good).replace(b"1234", b"1235"), "Corrupt"),
        ("bad-id", manifest_envelope(manifest_text(id_="2026-12-05")), "Corrupt"),
        ("object-elsewhere", manifest_envelope(manifest_text(objects=[dict(two[0], path="backups/other/x.age")])), "Corrupt"),
        ("object-is-manifest", manifest_envelope(manifest_text(objects=[dict(two[0], path="backups/20261205T030000Z-deadbeef/manifest.age")])), "Corrupt"),
        ("no-objects", manifest_envelope(manifest_text(objects=[])), "Corrupt"),
        ("duplicate-object", manifest_envelope(manifest_text(objects=[two[0], two[0]])), "Corrupt"),
        ("upper-hex-hash", manifest_envelope(manifest_text(objects=[dict(two[0], sha256="AB" * 32)])), "Corrupt"),
    ]
    return accepted, refused


MANIFEST_DICT = """\
# libFuzzer dictionary for fuzz_targets/backup_manifest.rs (written by
# scripts/fuzz_seeds.py). The valid envelopes in corpus/backup_manifest/
# carry a MAC under the fuzz keyring: they reach the accept path.
env_format="echorelay.backup-envelope.v1"
manifest_format="echorelay.backup.v1"
field_manifest="\\"manifest\\":"
field_mac="\\"mac\\":"
field_key_id="\\"key_id\\":"
field_tag="\\"tag\\":"
dir="backups/"
suffix=".age"
"""


# --- output ----------------------------------------------------------------


def planned_files():
    rng = Rng(RNG_SEED)
    kv, ki = key_seeds(rng)
    cv, ci = ciphertext_seeds(rng)
    xv, xi = xff_seeds()
    lv, li = lease_seeds()
    mv, mi = manifest_seeds()
    self_check(kv, ki, cv, ci, xv, xi, lv + li)
    files = {}
    for target, seeds in (
        ("key_parse", kv + ki),
        ("ciphertext_decode", cv + ci),
        ("forwarded_for", xv + xi),
        ("lease_token", lv + li),
        ("backup_manifest", mv + mi),
    ):
        for name, data, _ in seeds:
            files[FUZZ / "corpus" / target / f"seed-{name}"] = data
    files[FUZZ / "key_parse.dict"] = KEY_DICT.encode()
    files[FUZZ / "ciphertext_decode.dict"] = cipher_dict().encode()
    files[FUZZ / "forwarded_for.dict"] = XFF_DICT.encode()
    files[FUZZ / "lease_token.dict"] = LEASE_DICT.encode()
    files[FUZZ / "backup_manifest.dict"] = MANIFEST_DICT.encode()
    counts = {
        "key_parse": (len(kv), len(ki)),
        "ciphertext_decode": (len(cv), len(ci)),
        "forwarded_for": (len(xv), len(xi)),
        "lease_token": (len(lv), len(li)),
        "backup_manifest": (len(mv), len(mi)),
    }
    return files, counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare with the files on disk")
    args = ap.parse_args()
    files, counts = planned_files()
    stale = [
        p for target in counts for p in (FUZZ / "corpus" / target).glob("seed-*") if p not in files
    ]
    if args.check:
        bad = [p for p, d in files.items() if not p.exists() or p.read_bytes() != d] + stale
        for p in bad:
            print(f"out of date: {p.relative_to(ROOT)}", file=sys.stderr)
        sys.exit(1 if bad else 0)
    for p in stale:
        p.unlink()
    for p, data in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for target, (ok, bad) in counts.items():
        print(f"fuzz/corpus/{target}: {ok} accepted + {bad} rejected seeds")
    print("fuzz/key_parse.dict, fuzz/ciphertext_decode.dict, fuzz/forwarded_for.dict, fuzz/lease_token.dict, fuzz/backup_manifest.dict")


if __name__ == "__main__":
    main()
