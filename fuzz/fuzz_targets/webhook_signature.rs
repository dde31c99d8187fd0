//! Fuzzes Standard Webhooks verification (`echorelay_core::webhook`,
//! docs/FORMATS.md Part 6): `parse_signature_header` and `Verifier::verify`
//! must never panic, and whatever `verify` accepts must be authentic: the
//! timestamp is within the tolerance, the header parses and holds the MAC
//! that `sign` makes for one of the secrets, that signature alone
//! verifies again, and the same message with its body changed does not.
//!
//! Input layout: the bytes up to the first three `\n` are the `webhook-id`,
//! `webhook-timestamp` and `webhook-signature` headers (each must be UTF-8,
//! or the input is skipped); everything after the third `\n` is the body
//! (it may contain `\n`). Input with fewer than three `\n` is skipped.
//!
//! Fixed: the secrets `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw` (the
//! published Standard Webhooks test vector's) and
//! `whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD` (the Rust library's), as during
//! a rotation; now = 1614265330 (the vector's timestamp); the default
//! tolerance of 5 minutes. The `seed-valid-*` seeds in
//! corpus/webhook_signature verify under these
//! (`webhook::tests::fuzz_seeds_reach_accept_and_each_refusal` checks it).
#![no_main]

use chrono::DateTime;
use echorelay_core::webhook::{
    DEFAULT_TOLERANCE, MAX_SIGNATURE_ENTRIES, SigningSecret, Verifier, parse_signature_header,
    parse_timestamp, sign,
};
use libfuzzer_sys::fuzz_target;

const SECRETS: [&str; 2] = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
];
const NOW: i64 = 1_614_265_330;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let (Some(id), Some(ts), Some(header), Some(body)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let (Ok(id), Ok(ts), Ok(header)) = (
        std::str::from_utf8(id),
        std::str::from_utf8(ts),
        std::str::from_utf8(header),
    ) else {
        return;
    };

    let secrets: Vec<SigningSecret> = SECRETS
        .iter()
        .map(|s| SigningSecret::parse(s).expect("fixed secret parses"))
        .collect();
    let verifier = Verifier::new(secrets.clone()).expect("two secrets");
    let now = DateTime::from_timestamp(NOW, 0).expect("fixed now");

    let parsed = parse_signature_header(header);
    if let Ok(entries) = &parsed {
        assert!(entries.len() <= MAX_SIGNATURE_ENTRIES);
    }

    if verifier.verify(id, ts, header, body, now).is_ok() {
        let t = parse_timestamp(ts).expect("accepted timestamp parses");
        assert!((NOW - t).abs() <= DEFAULT_TOLERANCE.num_seconds());
        let entries = parsed.expect("accepted header parses");
        // The header holds what `sign` makes for one of the secrets, and
        // that signature alone verifies under that secret alone.
        let signer = secrets
            .iter()
            .find(|s| {
                let expected = sign(s, id, t, body).expect("accepted id signs");
                let expected = parse_signature_header(&expected).expect("sign's output parses");
                assert_eq!(expected.len(), 1);
                entries.iter().any(|e| e.mac() == expected[0].mac())
            })
            .expect("an accepted header holds a signature by one of the secrets");
        let alone = sign(signer, id, t, body).expect("accepted id signs");
        let one = Verifier::new([signer.clone()]).expect("one secret");
        assert!(one.verify(id, ts, &alone, body, now).is_ok());
        assert!(verifier.verify(id, ts, header, body, now).is_ok());
        // Another body does not verify with the same headers.
        let mut other = body.to_vec();
        match other.first_mut() {
            Some(b) => *b ^= 1,
            None => other.push(0),
        }
        assert!(verifier.verify(id, ts, header, &other, now).is_err());
    }
});
