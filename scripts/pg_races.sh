#!/usr/bin/env bash
# Runs the conformance suite's race checks and the queue suite's against
# Postgres N times in a row (default 20); any failure fails the script. Each check releases its
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
  reserve_attempt_respects_the_limit_under_races
  replace_session_wins_once_under_races
)
queue_checks=(
  racing_consumers_get_disjoint_jobs
  a_stale_holders_ack_is_refused_while_another_reserves
  ack_racing_lease_expiry_has_one_outcome
  nack_racing_lease_expiry_has_one_outcome
  extend_racing_lease_expiry_has_one_outcome
  racing_uses_of_one_token_win_once
  racing_enqueues_with_one_key_store_one_job
  racing_redrives_of_one_dead_job_win_once
)
cargo test -q -p echorelay-store-pg --test conformance --test queue_conformance --no-run
for i in $(seq "$runs"); do
  for suite in conformance queue_conformance; do
    if [[ "$suite" == conformance ]]; then names=("${checks[@]}"); else names=("${queue_checks[@]}"); fi
    if ! out=$(cargo test -q -p echorelay-store-pg --test "$suite" -- --exact "${names[@]}" 2>&1); then
      echo "$out"
      echo "pg races: run $i of $runs ($suite) FAILED"
      exit 1
    fi
    passed=$(grep -o '[0-9]* passed' <<<"$out" | head -1)
    echo "pg races: run $i of $runs ($suite): $passed"
    [[ "$passed" == "${#names[@]} passed" ]] || { echo "pg races: expected ${#names[@]} checks"; exit 1; }
  done
done
echo "pg races: $runs runs, 0 failures"
