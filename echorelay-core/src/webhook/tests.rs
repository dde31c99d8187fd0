use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use hmac::Mac as _;
use proptest::prelude::*;
use secrecy::ExposeSecret as _;

use super::*;

/// The published Standard Webhooks test vector, identical in the `sign`
/// tests of the reference libraries in
/// github.com/standard-webhooks/standard-webhooks:
/// libraries/python/tests/test_webhooks.py (`test_sign_function`),
/// libraries/go/webhook_test.go (`TestWebhookSign`),
/// libraries/javascript/src/webhook.test.ts, libraries/php/tests/WebhookTest.php
/// (`testSignFunctionWorks`), libraries/ruby/spec/webhook_spec.rb and
/// libraries/csharp/StandardWebhooks.Tests/WebhookTest.cs.
const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const VECTOR_TS: i64 = 1614265330;
const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// A signature of the vector that does not match: from
/// libraries/python/tests/test_webhooks.py
/// (`test_invalid_signature_raises_error`).
const VECTOR_WRONG_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";

/// The Rust reference library's vector: libraries/rust/src/lib.rs
/// (`tests::test_sign`) in the same repository.
const RUST_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const RUST_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const RUST_TS: i64 = 1649367553;
const RUST_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
const RUST_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

fn secret(text: &str) -> SigningSecret {
    SigningSecret::parse(text).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

fn verifier(texts: &[&str]) -> Verifier {
    Verifier::new(texts.iter().map(|t| secret(t))).unwrap()
}

fn whsec(key: &[u8]) -> String {
    format!("whsec_{}", STANDARD.encode(key))
}

// --- published vectors -------------------------------------------------

#[test]
fn the_published_vector_signs_and_verifies() {
    let s = secret(VECTOR_SECRET);
    assert_eq!(
        sign(&s, VECTOR_ID, VECTOR_TS, VECTOR_BODY).unwrap(),
        VECTOR_SIGNATURE
    );
    verifier(&[VECTOR_SECRET])
        .verify(
            VECTOR_ID,
            "1614265330",
            VECTOR_SIGNATURE,
            VECTOR_BODY,
            at(VECTOR_TS),
        )
        .unwrap();
}

#[test]
fn the_rust_library_vector_signs_and_verifies() {
    let s = secret(RUST_SECRET);
    assert_eq!(
        sign(&s, RUST_ID, RUST_TS, RUST_BODY).unwrap(),
        RUST_SIGNATURE
    );
    verifier(&[RUST_SECRET])
        .verify(
            RUST_ID,
            "1649367553",
            RUST_SIGNATURE,
            RUST_BODY,
            at(RUST_TS + 1),
        )
        .unwrap();
}

#[test]
fn the_published_wrong_signature_is_refused() {
    let got = verifier(&[VECTOR_SECRET]).verify(
        VECTOR_ID,
        "1614265330",
        VECTOR_WRONG_SIGNATURE,
        VECTOR_BODY,
        at(VECTOR_TS),
    );
    assert_eq!(got, Err(WebhookError::SignatureMismatch));
}

#[test]
fn the_published_multi_signature_header_verifies() {
    // libraries/python/tests/test_webhooks.py, test_multi_sig_payload_is_valid.
    let header = [
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        VECTOR_SIGNATURE,
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
    ]
    .join(" ");
    assert_eq!(parse_signature_header(&header).unwrap().len(), 3);
    verifier(&[VECTOR_SECRET])
        .verify(VECTOR_ID, "1614265330", &header, VECTOR_BODY, at(VECTOR_TS))
        .unwrap();
}

// --- secrets -------------------------------------------------------------

#[test]
fn secrets_parse_with_or_without_padding() {
    // 32 characters: no padding needed; the vector's key is 24 bytes.
    assert_eq!(secret(VECTOR_SECRET).key.len(), 24);
    // 25 bytes: "==" optional (libraries/python/tests/test_webhooks.py,
    // test_signature_verification_with_unpadded_secret).
    let a = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr");
    let b = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr==");
    assert_eq!(a.key.len(), 25);
    assert_eq!(*a.key, *b.key);
    // "Br" leaves non-zero bits after the last byte; like the reference
    // libraries, the key is the bytes they encode ("Bg" is canonical).
    assert_eq!(
        *a.key,
        *secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBg").key
    );
    // 26 bytes: "=" optional.
    let key = [7u8; 26];
    let padded = whsec(&key);
    assert!(padded.ends_with('=') && !padded.ends_with("=="));
    assert_eq!(*secret(&padded).key, key.to_vec());
    assert_eq!(
        *secret(&format!("whsec_{}", STANDARD_NO_PAD.encode(key))).key,
        key.to_vec()
    );
}

#[test]
fn key_lengths_24_to_64_are_accepted_and_others_refused() {
    for len in [MIN_KEY_LEN, 32, 33, MAX_KEY_LEN] {
        assert_eq!(secret(&whsec(&vec![0x5a; len])).key.len(), len);
    }
    for len in [1, 16, MIN_KEY_LEN - 1, MAX_KEY_LEN + 1, 66, 67, 100, 1000] {
        assert_eq!(
            SigningSecret::parse(&whsec(&vec![0x5a; len])).err(),
            Some(WebhookError::SecretLength),
            "{len} bytes"
        );
    }
}

#[test]
fn malformed_secrets_are_refused() {
    for (text, want) in [
        ("", WebhookError::SecretPrefix),
        ("whsec_", WebhookError::EmptySecret),
        (
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            WebhookError::SecretPrefix,
        ),
        (
            "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            WebhookError::SecretPrefix,
        ),
        (
            " whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            WebhookError::SecretPrefix,
        ),
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!",
            WebhookError::SecretEncoding,
        ),
        // URL-safe alphabet.
        (
            "whsec_C2FVsBQIhrscChlQIMV-b5sSYspob7oD",
            WebhookError::SecretEncoding,
        ),
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ",
            WebhookError::SecretEncoding,
        ),
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
            WebhookError::SecretEncoding,
        ),
        // Impossible length (1 mod 4).
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwB",
            WebhookError::SecretEncoding,
        ),
        ("whsec_====", WebhookError::SecretEncoding),
        ("whsec_AAAA", WebhookError::SecretLength),
        ("whsec_é", WebhookError::SecretEncoding),
    ] {
        assert_eq!(SigningSecret::parse(text).err(), Some(want), "{text:?}");
    }
    // Too long to be a 64-byte key, refused before decoding.
    assert_eq!(
        SigningSecret::parse(&format!("whsec_{}", "A".repeat(10_000))).err(),
        Some(WebhookError::SecretLength)
    );
}

#[test]
fn generated_target_secrets_parse() {
    for _ in 0..16 {
        let text = crate::config::generate_signing_secret();
        assert_eq!(secret(text.expose_secret()).key.len(), 32);
    }
}

#[test]
fn debug_never_shows_the_key() {
    for text in [VECTOR_SECRET, RUST_SECRET] {
        let s = secret(text);
        let b64 = &text["whsec_".len()..];
        let shown = format!("{s:?} {s:#?}");
        assert!(shown.contains("SigningSecret(whsec_…)"), "{shown}");
        assert!(!shown.contains(b64), "{shown}");
        assert!(!shown.contains(&b64[..8]), "{shown}");
        let v = Verifier::new([s]).unwrap();
        let shown = format!("{v:?} {v:#?}");
        assert!(!shown.contains(&b64[..8]), "{shown}");
        // Nor the key's bytes as a list of numbers.
        let bytes = STANDARD.decode(b64).unwrap();
        assert!(
            !shown.contains(&format!("{}, {}", bytes[0], bytes[1])),
            "{shown}"
        );
    }
    let entries = parse_signature_header(VECTOR_SIGNATURE).unwrap();
    let shown = format!("{entries:?}");
    assert_eq!(shown, "[SignatureEntry(v1,…)]");
}

// --- signing -----------------------------------------------------------------

#[test]
fn sign_refuses_ids_that_could_shift_the_fields() {
    let s = secret(VECTOR_SECRET);
    assert_eq!(sign(&s, "", 1, b"x"), Err(WebhookError::EmptyMessageId));
    assert_eq!(
        sign(&s, "msg_a.1", 1, b"x"),
        Err(WebhookError::MessageIdHasDot)
    );
    assert_eq!(
        sign(&s, &"m".repeat(MAX_MSG_ID_LEN + 1), 1, b"x"),
        Err(WebhookError::MessageIdTooLong)
    );
    assert!(sign(&s, &"m".repeat(MAX_MSG_ID_LEN), 1, b"x").is_ok());
    assert_eq!(
        sign(&s, "msg", -1, b"x"),
        Err(WebhookError::InvalidTimestamp)
    );
    assert!(sign(&s, "msg", 0, b"x").is_ok());
    // Why the dot matters: these two cover the same bytes.
    let k = Hmac::<Sha256>::new_from_slice(&s.key).unwrap();
    let same = |parts: &[&[u8]]| {
        let mut m = k.clone();
        for p in parts {
            m.update(p);
        }
        STANDARD.encode(m.finalize().into_bytes())
    };
    assert_eq!(
        same(&[b"a.1.", b"7.x"]),
        sign(&s, "a", 1, b"7.x").unwrap()[3..]
    );
}

#[test]
fn signature_header_joins_every_secret_by_single_spaces() {
    let (a, b) = (secret(VECTOR_SECRET), secret(RUST_SECRET));
    let header = signature_header(&[&a, &b], VECTOR_ID, VECTOR_TS, VECTOR_BODY).unwrap();
    let expected = format!(
        "{VECTOR_SIGNATURE} {}",
        sign(&b, VECTOR_ID, VECTOR_TS, VECTOR_BODY).unwrap()
    );
    assert_eq!(header, expected);
    assert_eq!(
        signature_header(&[&a], VECTOR_ID, VECTOR_TS, VECTOR_BODY).unwrap(),
        VECTOR_SIGNATURE
    );
    assert_eq!(
        signature_header(&[], VECTOR_ID, VECTOR_TS, VECTOR_BODY),
        Err(WebhookError::NoSecret)
    );
    assert_eq!(
        signature_header(&[&a, &b], "a.b", VECTOR_TS, VECTOR_BODY),
        Err(WebhookError::MessageIdHasDot)
    );
}

// --- verification ------------------------------------------------------------

#[test]
fn round_trip_and_every_changed_field_fails() {
    let s = secret(VECTOR_SECRET);
    let v = verifier(&[VECTOR_SECRET]);
    let body = b"{\"type\":\"contact.created\"}".as_slice();
    let header = sign(&s, "msg_1", 1_700_000_000, body).unwrap();
    let now = at(1_700_000_010);
    v.verify("msg_1", "1700000000", &header, body, now).unwrap();

    for i in 0..body.len() {
        let mut flipped = body.to_vec();
        flipped[i] ^= 0x01;
        assert_eq!(
            v.verify("msg_1", "1700000000", &header, &flipped, now),
            Err(WebhookError::SignatureMismatch),
            "byte {i}"
        );
    }
    let mut longer = body.to_vec();
    longer.push(b' ');
    assert_eq!(
        v.verify("msg_1", "1700000000", &header, &longer, now),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        verifier(&[RUST_SECRET]).verify("msg_1", "1700000000", &header, body, now),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        v.verify("msg_2", "1700000000", &header, body, now),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        v.verify("msg_1", "1700000001", &header, body, now),
        Err(WebhookError::SignatureMismatch)
    );
}

#[test]
fn two_signatures_verify_with_either_secret() {
    let (a, b) = (secret(VECTOR_SECRET), secret(RUST_SECRET));
    let header = signature_header(&[&a, &b], VECTOR_ID, VECTOR_TS, VECTOR_BODY).unwrap();
    let now = at(VECTOR_TS);
    for v in [
        verifier(&[VECTOR_SECRET]),
        verifier(&[RUST_SECRET]),
        verifier(&[RUST_SECRET, VECTOR_SECRET]),
    ] {
        v.verify(VECTOR_ID, "1614265330", &header, VECTOR_BODY, now)
            .unwrap();
    }
    // A verifier holding both secrets accepts a header of either alone.
    let both = verifier(&[VECTOR_SECRET, RUST_SECRET]);
    for s in [&a, &b] {
        let one = sign(s, VECTOR_ID, VECTOR_TS, VECTOR_BODY).unwrap();
        both.verify(VECTOR_ID, "1614265330", &one, VECTOR_BODY, now)
            .unwrap();
    }
    // A third secret accepts neither.
    let other = whsec(&[9u8; 32]);
    assert_eq!(
        verifier(&[&other]).verify(VECTOR_ID, "1614265330", &header, VECTOR_BODY, now),
        Err(WebhookError::SignatureMismatch)
    );
}

#[test]
fn tolerance_boundaries() {
    let s = secret(VECTOR_SECRET);
    let v = verifier(&[VECTOR_SECRET]);
    assert_eq!(v.tolerance(), Duration::minutes(5));
    let check = |ts: i64, now: DateTime<Utc>| {
        let header = sign(&s, VECTOR_ID, ts, VECTOR_BODY).unwrap();
        v.verify(VECTOR_ID, &ts.to_string(), &header, VECTOR_BODY, now)
    };
    let now = at(VECTOR_TS);
    assert_eq!(check(VECTOR_TS, now), Ok(()));
    assert_eq!(check(VECTOR_TS - 300, now), Ok(()));
    assert_eq!(check(VECTOR_TS - 301, now), Err(WebhookError::TooOld));
    assert_eq!(check(VECTOR_TS + 300, now), Ok(()));
    assert_eq!(check(VECTOR_TS + 301, now), Err(WebhookError::TooNew));
    assert_eq!(check(0, now), Err(WebhookError::TooOld));
    // Whole seconds of now count: 300.999 s old still passes.
    let late = now + Duration::milliseconds(999);
    assert_eq!(check(VECTOR_TS - 300, late), Ok(()));
    // Far from now either way, no overflow.
    assert_eq!(check(i64::MAX, now), Err(WebhookError::TooNew));
    assert_eq!(
        check(0, DateTime::<Utc>::MAX_UTC),
        Err(WebhookError::TooOld)
    );
    assert_eq!(
        check(1, DateTime::<Utc>::MIN_UTC),
        Err(WebhookError::TooNew)
    );
}

#[test]
fn the_tolerance_can_be_changed() {
    let s = secret(VECTOR_SECRET);
    let header = sign(&s, VECTOR_ID, VECTOR_TS, VECTOR_BODY).unwrap();
    let v = verifier(&[VECTOR_SECRET]).with_tolerance(Duration::seconds(10));
    let verify = |v: &Verifier, now| v.verify(VECTOR_ID, "1614265330", &header, VECTOR_BODY, now);
    assert_eq!(verify(&v, at(VECTOR_TS + 10)), Ok(()));
    assert_eq!(verify(&v, at(VECTOR_TS + 11)), Err(WebhookError::TooOld));
    assert_eq!(verify(&v, at(VECTOR_TS - 11)), Err(WebhookError::TooNew));
    let zero = verifier(&[VECTOR_SECRET]).with_tolerance(Duration::seconds(-5));
    assert_eq!(zero.tolerance(), Duration::zero());
    assert_eq!(verify(&zero, at(VECTOR_TS)), Ok(()));
    assert_eq!(verify(&zero, at(VECTOR_TS + 1)), Err(WebhookError::TooOld));
    let sub = verifier(&[VECTOR_SECRET]).with_tolerance(Duration::milliseconds(1500));
    assert_eq!(sub.tolerance(), Duration::seconds(1));
}

#[test]
fn verifier_needs_a_secret() {
    assert!(matches!(
        Verifier::new(Vec::new()),
        Err(WebhookError::NoSecret)
    ));
    assert!(matches!(
        Verifier::new(std::iter::empty()),
        Err(WebhookError::NoSecret)
    ));
}

#[test]
fn timestamps_must_be_canonical_unix_seconds() {
    assert_eq!(parse_timestamp("0"), Ok(0));
    assert_eq!(parse_timestamp("1614265330"), Ok(1614265330));
    assert_eq!(parse_timestamp("9223372036854775807"), Ok(i64::MAX));
    for bad in [
        "",
        " ",
        "01614265330",
        "00",
        "+1614265330",
        "-1614265330",
        "-0",
        "1614265330.0",
        "1.6e9",
        " 1614265330",
        "1614265330 ",
        "1614265330\n",
        "0x60382ff2",
        "１６１４２６５３３０",
        "9223372036854775808",
        "99999999999999999999",
        "111111111111111111111",
        "hello",
    ] {
        assert_eq!(
            parse_timestamp(bad),
            Err(WebhookError::InvalidTimestamp),
            "{bad:?}"
        );
        let got = verifier(&[VECTOR_SECRET]).verify(
            VECTOR_ID,
            bad,
            VECTOR_SIGNATURE,
            VECTOR_BODY,
            at(VECTOR_TS),
        );
        assert_eq!(got, Err(WebhookError::InvalidTimestamp), "{bad:?}");
    }
}

#[test]
fn message_ids_are_checked_on_verify() {
    let v = verifier(&[VECTOR_SECRET]);
    let verify = |id: &str| {
        v.verify(
            id,
            "1614265330",
            VECTOR_SIGNATURE,
            VECTOR_BODY,
            at(VECTOR_TS),
        )
    };
    assert_eq!(verify(""), Err(WebhookError::EmptyMessageId));
    assert_eq!(verify("msg.x"), Err(WebhookError::MessageIdHasDot));
    assert_eq!(verify("."), Err(WebhookError::MessageIdHasDot));
    assert_eq!(
        verify(&"m".repeat(MAX_MSG_ID_LEN + 1)),
        Err(WebhookError::MessageIdTooLong)
    );
    // 256 bytes of 2-byte characters is fine, 257 bytes is not.
    assert_eq!(
        verify(&"é".repeat(MAX_MSG_ID_LEN / 2)),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        verify(&format!("x{}", "é".repeat(MAX_MSG_ID_LEN / 2))),
        Err(WebhookError::MessageIdTooLong)
    );
}

#[test]
fn malformed_signature_headers_each_give_their_error() {
    let v = verifier(&[VECTOR_SECRET]);
    let verify = |h: &str| v.verify(VECTOR_ID, "1614265330", h, VECTOR_BODY, at(VECTOR_TS));
    for (header, want) in [
        (String::new(), WebhookError::EmptySignatureHeader),
        ("   ".to_owned(), WebhookError::EmptySignatureHeader),
        (" \t\r\n ".to_owned(), WebhookError::EmptySignatureHeader),
        (
            format!(
                "{VECTOR_SIGNATURE} v1a,{}",
                "A".repeat(MAX_SIGNATURE_HEADER_LEN)
            ),
            WebhookError::SignatureHeaderTooLong,
        ),
        (
            " ".repeat(MAX_SIGNATURE_HEADER_LEN + 1),
            WebhookError::SignatureHeaderTooLong,
        ),
        (
            vec![VECTOR_SIGNATURE; MAX_SIGNATURE_ENTRIES + 1].join(" "),
            WebhookError::TooManySignatures,
        ),
        (
            vec!["x"; MAX_SIGNATURE_ENTRIES + 1].join("  "),
            WebhookError::TooManySignatures,
        ),
        ("v1a,abc v2,def".to_owned(), WebhookError::NoSignature),
        ("garbage".to_owned(), WebhookError::NoSignature),
        ("v1,".to_owned(), WebhookError::NoSignature),
        ("v1".to_owned(), WebhookError::NoSignature),
        (",".to_owned(), WebhookError::NoSignature),
        (VECTOR_SIGNATURE[..8].to_owned(), WebhookError::NoSignature),
        (
            VECTOR_SIGNATURE.trim_end_matches('=').to_owned(),
            WebhookError::NoSignature,
        ),
        (
            format!("V1,{}", &VECTOR_SIGNATURE[3..]),
            WebhookError::NoSignature,
        ),
        (
            VECTOR_SIGNATURE.replace('+', "-").replace('/', "_"),
            WebhookError::NoSignature,
        ),
        (format!("{VECTOR_SIGNATURE}\t"), WebhookError::NoSignature),
        (format!("{VECTOR_SIGNATURE},"), WebhookError::NoSignature),
        (
            format!("v1,{}", STANDARD.encode([1u8; 31])),
            WebhookError::NoSignature,
        ),
        (
            format!("v1,{}", STANDARD.encode([1u8; 33])),
            WebhookError::NoSignature,
        ),
        (
            VECTOR_WRONG_SIGNATURE.to_owned(),
            WebhookError::SignatureMismatch,
        ),
    ] {
        assert_eq!(verify(&header), Err(want), "{header:?}");
    }
    // The limits themselves are fine: 64 entries in exactly 8 KiB.
    let mut at_limit = vec!["v1a,x"; MAX_SIGNATURE_ENTRIES - 1].join(" ");
    at_limit.push(' ');
    at_limit.push_str(VECTOR_SIGNATURE);
    let pad = MAX_SIGNATURE_HEADER_LEN - at_limit.len();
    at_limit.insert_str(0, &" ".repeat(pad));
    assert_eq!(at_limit.len(), MAX_SIGNATURE_HEADER_LEN);
    assert_eq!(verify(&at_limit), Ok(()));
}

#[test]
fn unknown_versions_and_undecodable_v1_entries_are_skipped() {
    let header = format!(
        "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg== \
         v2,{sig} v1,!!!! nocomma v1,{short}  {VECTOR_SIGNATURE} v1,x",
        sig = &VECTOR_SIGNATURE[3..],
        short = STANDARD.encode([0u8; 16]),
    );
    let entries = parse_signature_header(&header).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].version(), "v1");
    assert_eq!(STANDARD.encode(entries[0].mac()), &VECTOR_SIGNATURE[3..]);
    verifier(&[VECTOR_SECRET])
        .verify(VECTOR_ID, "1614265330", &header, VECTOR_BODY, at(VECTOR_TS))
        .unwrap();
    assert_eq!(parse_signature_header("v1a,x v2,y").unwrap().len(), 0);
}

#[test]
fn errors_never_show_secrets_or_signatures() {
    let sig_b64 = &VECTOR_SIGNATURE[3..];
    let key_b64 = &VECTOR_SECRET[6..];
    let mut errors = vec![
        SigningSecret::parse(&format!("{VECTOR_SECRET}!"))
            .err()
            .unwrap(),
        SigningSecret::parse(&VECTOR_SECRET[6..]).err().unwrap(),
        SigningSecret::parse(&format!("{VECTOR_SECRET}A"))
            .err()
            .unwrap(),
    ];
    let v = verifier(&[VECTOR_SECRET]);
    for (id, ts, header) in [
        (VECTOR_ID, "1614265331", VECTOR_SIGNATURE),
        (VECTOR_ID, "1614265330", VECTOR_WRONG_SIGNATURE),
        (VECTOR_ID, "1614265330", sig_b64),
        (VECTOR_ID, "x1614265330", VECTOR_SIGNATURE),
        (VECTOR_ID, "1", VECTOR_SIGNATURE),
        ("a.b", "1614265330", VECTOR_SIGNATURE),
    ] {
        errors.push(
            v.verify(id, ts, header, VECTOR_BODY, at(VECTOR_TS))
                .unwrap_err(),
        );
    }
    for e in errors {
        let shown = format!("{e} {e:?}");
        for needle in [sig_b64, &sig_b64[..8], key_b64, &key_b64[..8], "2432232314"] {
            assert!(!shown.contains(needle), "{shown}");
        }
    }
}

// --- properties ------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsing_never_panics(header in any::<String>(), structured in
        "( {0,2}(v1|v1a|v2|V1|)(,[A-Za-z0-9+/=]{0,46})?){0,70}") {
        for h in [&header, &structured] {
            if let Ok(entries) = parse_signature_header(h) {
                prop_assert!(entries.len() <= MAX_SIGNATURE_ENTRIES);
                prop_assert!(h.len() <= MAX_SIGNATURE_HEADER_LEN);
            }
        }
    }

    #[test]
    fn verify_never_panics(id in any::<String>(), ts in any::<String>(),
                           digits in "[0-9]{0,22}", header in any::<String>(),
                           body in proptest::collection::vec(any::<u8>(), 0..64),
                           now in any::<i64>()) {
        let v = verifier(&[VECTOR_SECRET, RUST_SECRET]);
        let now = DateTime::from_timestamp(now / 1000, 0).unwrap_or_default();
        for t in [&ts, &digits] {
            // Random headers essentially never carry a matching MAC.
            prop_assert!(v.verify(&id, t, &header, &body, now).is_err());
        }
    }

    #[test]
    fn signatures_verify_within_tolerance(
        id in "[^.]{1,64}",
        ts in 0i64..=253_402_300_799,
        skew in -300i64..=300,
        body in proptest::collection::vec(any::<u8>(), 0..256),
        key in proptest::collection::vec(any::<u8>(), MIN_KEY_LEN..=MAX_KEY_LEN),
        flip in any::<proptest::sample::Index>(),
    ) {
        let s = secret(&whsec(&key));
        let v = Verifier::new([s.clone()]).unwrap();
        let now = at(ts + skew);
        let header = sign(&s, &id, ts, &body).unwrap();
        prop_assert_eq!(v.verify(&id, &ts.to_string(), &header, &body, now), Ok(()));
        let rotation = signature_header(&[&secret(VECTOR_SECRET), &s], &id, ts, &body).unwrap();
        prop_assert_eq!(v.verify(&id, &ts.to_string(), &rotation, &body, now), Ok(()));
        if !body.is_empty() {
            let mut other = body.clone();
            other[flip.index(body.len())] ^= 0x80;
            prop_assert_eq!(
                v.verify(&id, &ts.to_string(), &header, &other, now),
                Err(WebhookError::SignatureMismatch)
            );
        }
    }
}

// --- fuzz seeds ------------------------------------------------------------

/// The fuzz target's fixed secrets and now (fuzz/fuzz_targets/webhook_signature.rs).
const FUZZ_SECRETS: [&str; 2] = [VECTOR_SECRET, RUST_SECRET];
const FUZZ_NOW: i64 = VECTOR_TS;

/// The fuzz target's input layout: id, timestamp and signature header up to
/// the first three `\n` (UTF-8), the body after.
fn split_fuzz_input(data: &[u8]) -> Option<(&str, &str, &str, &[u8])> {
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let id = std::str::from_utf8(parts.next()?).ok()?;
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let header = std::str::from_utf8(parts.next()?).ok()?;
    Some((id, ts, header, parts.next()?))
}

/// The `seed-valid-*` seeds (written with Python's `hmac` and `base64`,
/// independently of this module) reach the accept path; every `seed-bad-*`
/// is refused with the error named here (`None`: the fuzz target skips it
/// as not in its layout).
#[test]
fn fuzz_seeds_reach_accept_and_each_refusal() {
    use WebhookError as E;
    let expected: BTreeMap<&str, Option<E>> = [
        ("bad-65-entries", Some(E::TooManySignatures)),
        ("bad-body-changed", Some(E::SignatureMismatch)),
        ("bad-empty-header", Some(E::EmptySignatureHeader)),
        ("bad-header-too-long", Some(E::SignatureHeaderTooLong)),
        ("bad-id-257-bytes", Some(E::MessageIdTooLong)),
        ("bad-id-changed", Some(E::SignatureMismatch)),
        ("bad-id-dot", Some(E::MessageIdHasDot)),
        ("bad-id-empty", Some(E::EmptyMessageId)),
        ("bad-layout-empty", None),
        ("bad-layout-no-body-line", None),
        ("bad-layout-not-utf8", None),
        ("bad-only-unknown-versions", Some(E::NoSignature)),
        ("bad-other-secret", Some(E::SignatureMismatch)),
        ("bad-short-mac", Some(E::NoSignature)),
        ("bad-timestamp-21-digits", Some(E::InvalidTimestamp)),
        ("bad-timestamp-changed", Some(E::SignatureMismatch)),
        ("bad-timestamp-empty", Some(E::InvalidTimestamp)),
        ("bad-timestamp-fraction", Some(E::InvalidTimestamp)),
        ("bad-timestamp-i64-overflow", Some(E::InvalidTimestamp)),
        ("bad-timestamp-leading-zero", Some(E::InvalidTimestamp)),
        ("bad-timestamp-negative", Some(E::InvalidTimestamp)),
        ("bad-timestamp-plus-sign", Some(E::InvalidTimestamp)),
        ("bad-timestamp-space", Some(E::InvalidTimestamp)),
        ("bad-too-new", Some(E::TooNew)),
        ("bad-too-old", Some(E::TooOld)),
        ("bad-unpadded-signature", Some(E::NoSignature)),
        ("bad-whitespace-header", Some(E::EmptySignatureHeader)),
        ("bad-wrong-signature", Some(E::SignatureMismatch)),
    ]
    .into_iter()
    .collect();

    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/webhook_signature"
    ));
    let v = verifier(&FUZZ_SECRETS);
    let now = at(FUZZ_NOW);
    let (mut accepted, mut refused) = (0, Vec::new());
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        let file = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(name) = file.strip_prefix("seed-") else {
            continue;
        };
        let data = std::fs::read(&p).unwrap();
        let got = split_fuzz_input(&data).map(|(id, ts, header, body)| {
            let r = v.verify(id, ts, header, body, now);
            if r.is_ok() {
                // What the fuzz target asserts of an accepted input.
                let t = parse_timestamp(ts).unwrap();
                let entries = parse_signature_header(header).unwrap();
                assert!(FUZZ_SECRETS.iter().any(|s| {
                    let mine = sign(&secret(s), id, t, body).unwrap();
                    let mine = parse_signature_header(&mine).unwrap();
                    entries.iter().any(|e| e.mac() == mine[0].mac())
                }));
            }
            r
        });
        if name.starts_with("valid-") {
            assert_eq!(got, Some(Ok(())), "{file}");
            accepted += 1;
        } else {
            let want = expected
                .get(name)
                .unwrap_or_else(|| panic!("{file}: add it to the table"));
            assert_eq!(got, want.map(Err), "{file}");
            refused.push(name.to_owned());
        }
    }
    assert!(accepted >= 10, "only {accepted} valid seeds");
    refused.sort();
    assert_eq!(refused, expected.keys().copied().collect::<Vec<_>>());
}
