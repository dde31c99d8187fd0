#!/usr/bin/env bash
# Mutation testing of exactly the Rust lines changed since BASE.
#
#   scripts/mutants.sh [BASE] [extra cargo-mutants arguments…]
#
# BASE defaults to the previous commit (HEAD~1); the diff is taken against
# the working tree, so uncommitted changes count too. Every workspace test
# runs for every mutant (`--test-workspace true`, settings in
# .cargo/mutants.toml: nextest, the `mutants` profile). The Postgres
# adapter's tests skip without DATABASE_URL, so a change there needs it set
# (the script refuses otherwise).
#
# Scope: every package of the workspace but the test suite itself
# (echorelay-testkit, excluded in .cargo/mutants.toml).
#
# Exit status: 0 when no mutant in a security module survived (survivors
# elsewhere are printed as warnings); 1 when one did and it is not listed
# in scripts/mutants-equivalent.txt; 2 for a usage error, a baseline that
# fails, or cargo-mutants failing otherwise. Timeouts count as caught.
#
# Results: target/mutants-diff/mutants.out (caught.txt, missed.txt, …).
# The whole-core pass and its figures: TESTING.md.
set -euo pipefail
cd "$(dirname "$0")/.."

base="${1:-HEAD~1}"
[[ $# -gt 0 ]] && shift
command -v cargo-mutants >/dev/null || {
  echo "mutants.sh: cargo-mutants is not installed: cargo install cargo-mutants@27.1.0 --locked" >&2
  exit 2
}
git rev-parse --verify --quiet "$base^{commit}" >/dev/null || {
  echo "mutants.sh: $base is not a commit" >&2
  exit 2
}

# Security modules: a survivor here fails the script.
security='^echorelay-core/src/(access|audit|config|keys|rewrap|vault)\.rs|^echorelay-core/src/account/|^echorelay-store-[a-z]+/src/|^echorelay-http/src/'

out=target/mutants-diff
mkdir -p "$out/mutants.out"
diff_file="$out/change.diff"
git diff "$base" -- '*.rs' >"$diff_file"
if [[ ! -s $diff_file ]]; then
  echo "mutants.sh: no Rust lines changed since $base"
  exit 0
fi
if grep -q '^+++ b/echorelay-store-pg/' "$diff_file" && [[ -z ${DATABASE_URL:-} ]]; then
  echo "mutants.sh: the change touches echorelay-store-pg, whose tests skip without DATABASE_URL; set it" >&2
  exit 2
fi

rc=0
# --workspace: without it cargo-mutants mutates the root package only.
cargo mutants --workspace --in-diff "$diff_file" --test-workspace true -j 1 -o "$out" "$@" || rc=$?
# 0: all caught; 2: some missed; 3: some timed out; anything else: no verdict.
case $rc in
  0 | 2 | 3) ;;
  *)
    echo "mutants.sh: cargo-mutants exited with $rc (baseline failed or bad arguments); see $out/mutants.out/debug.log" >&2
    exit 2
    ;;
esac

# A survivor's name without its line:column (they move with every edit):
# "path: replace … in function".
strip() { sed -E 's/^([^:]+):[0-9]+:[0-9]+: /\1: /'; }
missed="$out/mutants.out/missed.txt"
known=scripts/mutants-equivalent.txt
[[ -f $missed ]] || : >"$missed"
unexplained=$(strip <"$missed" | grep -E "$security" |
  grep -vxF -f <(grep -v '^#' "$known" | sed -E 's/[[:space:]]+#.*$//' | grep -v '^$') || true)
elsewhere=$(strip <"$missed" | grep -vE "$security" || true)

caught=$(wc -l 2>/dev/null <"$out/mutants.out/caught.txt" || echo 0)
timeouts=$(wc -l 2>/dev/null <"$out/mutants.out/timeout.txt" || echo 0)
echo "mutants.sh: since $base: $caught caught, $timeouts timed out (caught), $(wc -l <"$missed") missed"
if [[ -n $elsewhere ]]; then
  echo "mutants.sh: survivors outside the security modules (add a test or a reason):"
  echo "$elsewhere" | sed 's/^/  /'
fi
if [[ -n $unexplained ]]; then
  echo "mutants.sh: survivors in security modules, neither killed nor listed in $known:" >&2
  echo "$unexplained" | sed 's/^/  /' >&2
  exit 1
fi
exit 0
