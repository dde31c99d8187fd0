#!/usr/bin/env python3
"""Runs `echorelay-server create-owner` for scripts: answers its TOTP
enrollment with a code computed from the seed it prints (RFC 6238:
HMAC-SHA-1, 6 digits, 30 s) and prints the owner API key it mints.

    scripts/owner_key.py SERVER_BINARY EMAIL SLUG

The password is read from ECHORELAY_OWNER_PASSWORD (create-owner
--password-env); the store from the environment, as for the server."""
import base64, hashlib, hmac, re, struct, subprocess, sys, time


def totp(seed_base32: str, at: float) -> str:
    seed = base64.b32decode(seed_base32 + "=" * (-len(seed_base32) % 8))
    mac = hmac.new(seed, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def main() -> int:
    binary, email, slug = sys.argv[1:4]
    p = subprocess.Popen(
        [binary, "create-owner", "--email", email, "--project", slug,
         "--password-env", "ECHORELAY_OWNER_PASSWORD"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdin and p.stdout
    seed = None
    for line in p.stdout:
        m = re.search(r"or type ([A-Z2-7]+)\)", line)
        if m:
            seed = m.group(1)
            break
    if seed is None:
        print("owner_key.py: create-owner printed no TOTP seed", file=sys.stderr)
        return 2
    p.stdin.write(totp(seed, time.time()) + "\n")
    p.stdin.close()
    key = None
    for line in p.stdout:
        if line.startswith("er_live_") or line.startswith("er_test_"):
            key = line.strip()
    if p.wait() != 0 or key is None:
        print("owner_key.py: create-owner failed", file=sys.stderr)
        return 2
    print(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
