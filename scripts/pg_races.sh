#!/usr/bin/env bash
# Runs the conformance suite's race checks against Postgres N times in a
# row (default 20); any failure fails the script. Each check releases its
# racing callers from a barrier (echorelay_testkit::race), on a fresh
# schema, through separate database sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
checks=(
  advance_totp_step_wins_once_under_races
  backup_codes_are_single_use_under_races
  consume_backup_code_succeeds_once_under_races
  concurrent_appends_keep_one_chain
  concurrent_renewals_leave_one_session
  concurrent_reveals_reveal_once
  concurrent_rotate_due_makes_one_successor
  collections_racing_the_revocation_of_their_key_do_not_survive
  keys_minted_by_a_dependent_racing_the_revocation_do_not_survive
  mints_racing_the_revocation_of_their_key_do_not_survive
  rotations_racing_the_revocation_of_their_key_do_not_survive
  one_challenge_is_used_once_under_races
  owners_demoting_each_other_keep_one
  parallel_guesses_respect_the_limit
  same_code_on_two_challenges_wins_once
  take_challenge_gives_one_caller_the_challenge_under_races
)
cargo test -q -p echorelay-store-pg --test conformance --no-run
for i in $(seq "$runs"); do
  if ! out=$(cargo test -q -p echorelay-store-pg --test conformance -- --exact "${checks[@]}" 2>&1); then
    echo "$out"
    echo "pg races: run $i of $runs FAILED"
    exit 1
  fi
  passed=$(grep -o '[0-9]* passed' <<<"$out" | head -1)
  echo "pg races: run $i of $runs: $passed"
  [[ "$passed" == "${#checks[@]} passed" ]] || { echo "pg races: expected ${#checks[@]} checks"; exit 1; }
done
echo "pg races: $runs runs, 0 failures"
