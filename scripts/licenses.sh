#!/usr/bin/env bash
# Regenerates echorelay-http/assets/licenses.html (served at /licenses)
# from the dependency graph with cargo-about 0.9.3
# (`cargo install --locked --version 0.9.3 --features cli cargo-about`),
# the template echorelay-http/about.hbs and echorelay-http/about.toml.
# Run it after changing dependencies; tests/licenses.rs fails until then.
# All features: the page covers every crate a build of the server can hold
# (pg, backup: object_store, age, indicatif).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fetch --quiet
cargo about generate -m echorelay-http/Cargo.toml --all-features --frozen -c echorelay-http/about.toml \
  -o echorelay-http/assets/licenses.html echorelay-http/about.hbs
echo "licenses.sh: $(grep -c 'data-crate=' echorelay-http/assets/licenses.html) crates"
