#!/usr/bin/env bash
# S6 / issue 3 item 9: bcrypt cost-13 verification, echorelay against PHP's
# password_verify, on the SAME PHP-made hash, in one run, with the ratio
# (target: ours/PHP <= 1.15).
#
#   scripts/bench-bcrypt.sh            # from anywhere; needs cargo and php-cli
#   PHP_ITERATIONS=25 scripts/bench-bcrypt.sh
#
# The hash is the first $2y$13$ vector of
# echorelay-core/tests/vectors/php_bcrypt.json (made by PHP's password_hash).
# Ours: criterion median of `cargo bench --bench bcrypt` (benches/bcrypt.rs,
# 10 samples, ~10 s). PHP: median of PHP_ITERATIONS (default 15) timed calls
# of password_verify in one php process. Run on a quiet machine.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
vectors="$root/echorelay-core/tests/vectors/php_bcrypt.json"
iterations="${PHP_ITERATIONS:-15}"

command -v php >/dev/null || { echo "php not found (apt-get install php-cli)" >&2; exit 1; }

# Pick the vector (password and hash) with PHP itself.
pick='$v = json_decode(file_get_contents($argv[1]), true, 512, JSON_THROW_ON_ERROR);
foreach ($v["vectors"] as $x) {
    if (str_starts_with($x["hash"], "$2y$13$") && !$x["symfony_prehash"]) {
        echo $argv[2] === "hash" ? $x["hash"] : $x["password"]; exit(0);
    }
}
fwrite(STDERR, "no \$2y\$13\$ vector\n"); exit(1);'
ECHORELAY_BENCH_HASH="$(php -r "$pick" "$vectors" hash)"
ECHORELAY_BENCH_PASSWORD="$(php -r "$pick" "$vectors" password)"
export ECHORELAY_BENCH_HASH ECHORELAY_BENCH_PASSWORD

# Criterion's output directory: ours, so the estimates file is known.
target_dir="$(cargo metadata --format-version 1 --no-deps \
    | php -r 'echo json_decode(stream_get_contents(STDIN), true)["target_directory"];')"
export CRITERION_HOME="${CRITERION_HOME:-$target_dir/criterion}"
estimates="$CRITERION_HOME/bcrypt/verify_cost13/new/estimates.json"
rm -f "$estimates"

echo "== machine: $(uname -srm), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== $(php -r 'echo "PHP ", PHP_VERSION;'), $(rustc --version)"
echo "== hash: ${ECHORELAY_BENCH_HASH:0:7}… (from $(basename "$vectors"))"
echo "== echorelay: cargo bench --bench bcrypt"
cargo bench --bench bcrypt
[ -f "$estimates" ] || { echo "no criterion estimates at $estimates" >&2; exit 1; }

echo "== PHP: password_verify x $iterations"
php -r '
$pw = getenv("ECHORELAY_BENCH_PASSWORD"); $h = getenv("ECHORELAY_BENCH_HASH"); $n = (int)$argv[1];
if (!password_verify($pw, $h)) { fwrite(STDERR, "PHP: the vector does not verify\n"); exit(1); }
$ours = json_decode(file_get_contents($argv[2]), true)["median"]["point_estimate"] / 1e9;
$t = [];
for ($i = 0; $i < $n; $i++) {
    $s = hrtime(true);
    if (!password_verify($pw, $h)) { exit(1); }
    $t[] = (hrtime(true) - $s) / 1e9;
}
sort($t);
$m = count($t);
$php = $m % 2 ? $t[intdiv($m, 2)] : ($t[$m / 2 - 1] + $t[$m / 2]) / 2;
printf("PHP password_verify: median %.4f s (min %.4f, max %.4f, n=%d)\n", $php, $t[0], $t[$m - 1], $m);
printf("\nbcrypt cost 13 verify, median: echorelay %.4f s | PHP %.4f s | ratio ours/PHP %.3f (target <= 1.15) %s\n",
    $ours, $php, $ours / $php, $ours / $php <= 1.15 ? "OK" : "OVER TARGET");
' "$iterations" "$estimates"
