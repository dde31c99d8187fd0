<?php
// Interop vectors for echorelay's password module (invariant S6), made by
// PHP's own password_hash(PASSWORD_BCRYPT), exactly as a Symfony application
// (NativePasswordHasher) would store them.
//
// Usage (from the workspace root):
//   php scripts/php_bcrypt_vectors.php > echorelay-core/tests/vectors/php_bcrypt.json
//
// Every run makes new salts, so the output differs from run to run; the
// committed file is one such run, checked by
// echorelay-core/tests/php_bcrypt_interop.rs.

declare(strict_types=1);

// Symfony's NativePasswordHasher rule for bcrypt (on hash and on verify):
// bcrypt stops at a NUL byte and after 72 bytes, so such a password is first
// replaced by base64(SHA-512(password)) (88 chars, of which bcrypt uses 72).
function symfony_prehash(string $pw): string
{
    if (72 < strlen($pw) || str_contains($pw, "\0")) {
        $pw = base64_encode(hash('sha512', $pw, true));
    }
    return $pw;
}

function needs_prehash(string $pw): bool
{
    return 72 < strlen($pw) || str_contains($pw, "\0");
}

$p72 = substr(str_repeat('echorelay-72-byte-boundary/', 3), 0, 72);

// [note, password, cost]
$cases = [
    ['ascii', 'correct horse battery staple', 10],
    ['unicode (UTF-8)', "p\u{e4}ssw\u{f6}rd \u{2013} \u{5bc6}\u{7801} \u{1f510} \u{3a9}\u{3bc}\u{3ad}\u{3b3}\u{3b1}", 10],
    ['single byte', 'a', 10],
    ['exactly 72 bytes (bcrypt limit, no pre-hash)', $p72, 10],
    ['73 bytes: the 72-byte vector plus one byte (Symfony pre-hash)', $p72 . 'X', 10],
    ['200 bytes, multi-byte UTF-8 (Symfony pre-hash)', str_repeat("ab\u{20ac}", 40), 10],
    ['73 bytes, the 72-byte boundary splits a UTF-8 character (Symfony pre-hash)', str_repeat('z', 71) . "\u{e9}", 10],
    ['contains a NUL byte (Symfony pre-hash)', "pass\0word", 10],
    ['cost 13 (Symfony default)', 'Tr0ub4dor&3 at cost thirteen', 13],
    ['cost 13, unicode', "\u{fc}ber-geheim \u{2603}", 13],
];

$vectors = [];
foreach ($cases as [$note, $pw, $cost]) {
    if (preg_match('//u', $pw) !== 1) {
        fwrite(STDERR, "not UTF-8: $note\n");
        exit(1);
    }
    $hash = password_hash(symfony_prehash($pw), PASSWORD_BCRYPT, ['cost' => $cost]);
    $vectors[] = [
        'note' => $note,
        'password' => $pw,
        'hash' => $hash,
        'symfony_prehash' => needs_prehash($pw),
    ];
}

// $2b$ and $2a$ variants of the first (ASCII) vector: same salt and digest,
// only the prefix differs. PHP itself accepts them (checked below).
$first = $vectors[0];
foreach (['2b', '2a'] as $v) {
    $vectors[] = [
        'note' => "ascii, \$$v\$ prefix (derived from the \$2y\$ vector)",
        'password' => $first['password'],
        'hash' => '$' . $v . substr($first['hash'], 3),
        'symfony_prehash' => false,
    ];
}

// Self-check with PHP's own password_verify, and that the 73-byte vector is
// not fooled by its first 72 bytes (nothing silently truncated).
foreach ($vectors as $v) {
    if (!str_starts_with($v['hash'], '$2') || strlen($v['hash']) !== 60
        || !password_verify(symfony_prehash($v['password']), $v['hash'])) {
        fwrite(STDERR, "PHP does not verify its own vector: {$v['note']}\n");
        exit(1);
    }
}
if (password_verify(symfony_prehash($p72), $vectors[4]['hash'])) {
    fwrite(STDERR, "73-byte vector verifies with its 72-byte prefix\n");
    exit(1);
}

echo json_encode([
    'generator' => 'scripts/php_bcrypt_vectors.php: password_hash(PASSWORD_BCRYPT) with Symfony NativePasswordHasher pre-hash rule',
    'php_version' => PHP_VERSION,
    'vectors' => $vectors,
], JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR), "\n";
