#!/usr/bin/env python3
"""Drives echorelay through a client generated from its /openapi.json by
an outside generator (openapi-python-client): lists the project's lines,
mints a key, and checks that the new key lists the keys itself. Every
answer is parsed into the generated models, so a body the document does
not describe fails here.

    scripts/generated_client.py CLIENT_DIR BASE_URL OWNER_KEY [SLUG]

CLIENT_DIR is the generated package (`openapi-python-client generate
--meta none --output-path CLIENT_DIR/echorelay_client`)."""
import sys


def main() -> int:
    client_dir, base_url, owner_key = sys.argv[1:4]
    slug = sys.argv[4] if len(sys.argv) > 4 else "demo"
    sys.path.insert(0, client_dir)
    from echorelay_client import AuthenticatedClient
    from echorelay_client.api.config import create_line, lines
    from echorelay_client.api.keys import list_keys, mint_key
    from echorelay_client.models import (
        Environment, KeysAnswer, Line, LinesAnswer, MintBody, MintedAnswer, NameBody, Role)

    owner = AuthenticatedClient(base_url=base_url, token=owner_key,
                                raise_on_unexpected_status=True)
    made = create_line.sync_detailed(slug, client=owner, body=NameBody(name="orders"))
    if made.status_code != 201 or not isinstance(made.parsed, Line):
        print(f"generated_client.py: create line: {made.status_code} {made.content!r}", file=sys.stderr)
        return 1
    listed = lines.sync_detailed(slug, client=owner)
    if listed.status_code != 200 or not isinstance(listed.parsed, LinesAnswer):
        print(f"generated_client.py: lines: {listed.status_code} {listed.content!r}", file=sys.stderr)
        return 1
    if made.parsed.id not in [v.line.id for v in listed.parsed.lines]:
        print("generated_client.py: the new line is not listed", file=sys.stderr)
        return 1
    print(f"generated_client.py: {len(listed.parsed.lines)} lines, {made.parsed.id} among them")

    minted = mint_key.sync_detailed(slug, client=owner, body=MintBody(
        environment=Environment.TEST, role=Role.VIEWER, label="generated client"))
    if minted.status_code != 201 or not isinstance(minted.parsed, MintedAnswer):
        print(f"generated_client.py: mint: {minted.status_code} {minted.content!r}", file=sys.stderr)
        return 1
    key = minted.parsed
    if key.key.role != Role.VIEWER or not key.plaintext.startswith("er_test_"):
        print(f"generated_client.py: minted {key.key.role} {key.key.hint}", file=sys.stderr)
        return 1
    print(f"generated_client.py: minted {key.key.id} ({key.key.hint})")

    # The owner lists it among the project's keys.
    keys = list_keys.sync_detailed(slug, client=owner)
    if keys.status_code != 200 or not isinstance(keys.parsed, KeysAnswer):
        print(f"generated_client.py: keys: {keys.status_code} {keys.content!r}", file=sys.stderr)
        return 1
    if key.key.id not in [k.id for k in keys.parsed.keys]:
        print("generated_client.py: the minted key is not listed", file=sys.stderr)
        return 1
    # And the new key itself authenticates (a viewer reads the lines).
    viewer = AuthenticatedClient(base_url=base_url, token=key.plaintext,
                                 raise_on_unexpected_status=True)
    again = lines.sync_detailed(slug, client=viewer)
    if again.status_code != 200 or not isinstance(again.parsed, LinesAnswer):
        print(f"generated_client.py: lines with the new key: {again.status_code}", file=sys.stderr)
        return 1
    print(f"generated_client.py: ok ({len(keys.parsed.keys)} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
