//! The queue's types at their boundaries, and the lease token's text form.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

#[test]
fn queue_names_at_their_boundaries() {
    for ok in ["a", "0", "deliveries", "a.b_c-d", "9-", &"a".repeat(64)] {
        assert_eq!(QueueName::new(ok).unwrap().as_str(), ok, "{ok}");
        assert_eq!(ok.parse::<QueueName>().unwrap().to_string(), ok);
    }
    for bad in [
        "",
        &"a".repeat(65),
        "A",
        "Deliveries",
        ".a",
        "_a",
        "-a",
        "a b",
        "a/b",
        "a:b",
        "a{b}",
        "é",
        "a\n",
    ] {
        assert_eq!(QueueName::new(bad), Err(QueueError::InvalidName), "{bad:?}");
    }
}

#[test]
fn error_classes_at_their_boundaries() {
    for ok in ["a", "http_503", "timeout", ".x", "-", &"z".repeat(64)] {
        assert_eq!(ErrorClass::new(ok).unwrap().as_str(), ok);
    }
    for bad in ["", &"z".repeat(65), "HTTP", "a b", "a/b", "é"] {
        assert_eq!(
            ErrorClass::new(bad),
            Err(QueueError::InvalidArgument("error class")),
            "{bad:?}"
        );
    }
    assert_eq!(ErrorClass::lease_expired().as_str(), "lease_expired");
    assert_eq!(
        ErrorClass::new(ErrorClass::LEASE_EXPIRED).unwrap(),
        ErrorClass::lease_expired()
    );
}

#[test]
fn dedup_keys_at_their_boundaries() {
    let printable: String = (0x21u8..=0x7e).map(char::from).collect();
    for ok in ["a", "order:42", "~", &printable, &"k".repeat(200)] {
        assert_eq!(DedupKey::new(ok).unwrap().as_str(), ok);
    }
    for bad in [
        "",
        &"k".repeat(201),
        " ",
        "a b",
        "a\tb",
        "a\u{7f}",
        "é",
        "a\0",
    ] {
        assert_eq!(
            DedupKey::new(bad),
            Err(QueueError::InvalidArgument("de-duplication key")),
            "{bad:?}"
        );
    }
}

/// The vector of docs/FORMATS.md §4.3.
pub(crate) const TOKEN_VECTOR: &str =
    "lease_00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0_7";

#[test]
fn the_documented_token_vector_parses() {
    let t: LeaseToken = TOKEN_VECTOR.parse().unwrap();
    assert_eq!(t.job().to_string(), "job_00112233445566778899aabbccddeeff");
    assert_eq!(
        t.nonce().as_bytes(),
        &[
            0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2,
            0xe1, 0xf0
        ]
    );
    assert_eq!(t.attempt(), 7);
    assert_eq!(t.to_string(), TOKEN_VECTOR);
}

#[test]
fn malformed_tokens_are_refused() {
    let v = TOKEN_VECTOR;
    let body = &v["lease_".len()..v.len() - 2];
    let refused = [
        String::new(),
        "lease_".into(),
        v.replace("lease_", "Lease_"),
        v.replace("lease_", "lease-"),
        v.replace("lease_", ""),
        format!("lease_{body}"),                    // no attempt
        format!("lease_{body}_"),                   // empty attempt
        format!("lease_{body}_0"),                  // attempt 0
        format!("lease_{body}_07"),                 // leading zero
        format!("lease_{body}_1001"),               // above MAX_ATTEMPTS
        format!("lease_{body}_10000"),              // five digits
        format!("lease_{body}_+7"),                 // sign
        format!("lease_{body}_7 "),                 // trailing space
        format!("lease_{body}_7\n"),                // trailing newline
        format!("lease_{body}_7_7"),                // two attempts
        format!("lease_{}_7", &body[1..]),          // 63 hex digits
        format!("lease_{body}0_7"),                 // 65 hex digits
        format!("lease_{}_7", body.to_uppercase()), // not canonical
        format!("lease_{}A_7", &body[1..]),         // one uppercase digit
        format!("lease_{}g_7", &body[1..]),         // not hex
        format!("lease_{}é_7", &body[2..]),         // multi-byte, 64 bytes
        format!(" {v}"),
    ];
    for s in refused {
        assert_eq!(
            s.parse::<LeaseToken>(),
            Err(QueueError::InvalidToken),
            "{s:?}"
        );
    }
    for attempt in [1, 9, 10, 99, 100, 999, MAX_ATTEMPTS] {
        let s = format!("lease_{body}_{attempt}");
        assert_eq!(s.parse::<LeaseToken>().unwrap().attempt(), attempt);
    }
}

#[test]
fn debug_forms_hold_no_payload_and_a_short_nonce() {
    let job = NewJob {
        id: JobId::from_bytes([1; 16]),
        payload: b"super-secret-reference".to_vec(),
        run_at: DateTime::UNIX_EPOCH,
        max_attempts: 3,
        dedup_key: None,
    };
    let shown = format!("{job:?}");
    assert!(!shown.contains("super-secret"), "{shown}");
    assert!(shown.contains("payload_len: 22"), "{shown}");
    let nonce = LeaseNonce::from_bytes([0xab; 16]);
    assert_eq!(format!("{nonce:?}"), "LeaseNonce(abababab…)");
}

#[test]
fn nonces_are_random() {
    assert_ne!(LeaseNonce::random(), LeaseNonce::random());
}

proptest! {
    #[test]
    fn tokens_round_trip_through_their_text(
        job in any::<[u8; 16]>(),
        nonce in any::<[u8; 16]>(),
        attempt in 1u32..=MAX_ATTEMPTS,
    ) {
        let t = LeaseToken::new(JobId::from_bytes(job), LeaseNonce::from_bytes(nonce), attempt);
        let s = t.to_string();
        prop_assert_eq!(s.len(), "lease_".len() + 64 + 1 + attempt.to_string().len());
        prop_assert_eq!(s.parse::<LeaseToken>(), Ok(t));
    }

    #[test]
    fn any_accepted_text_re_displays_identically(s in "lease_[0-9a-f]{63,65}_[0-9]{0,5}|lease_[0-9a-f]{64}_[1-9][0-9]{0,3}|lease_[0-9a-fA-F]{64}_[1-9][0-9]{0,3}|\\PC{0,80}") {
        if let Ok(t) = s.parse::<LeaseToken>() {
            prop_assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn queue_names_accept_exactly_the_documented_alphabet(s in "[a-z0-9._-]{0,70}|\\PC{0,70}") {
        let expected = (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        prop_assert_eq!(QueueName::new(&s).is_ok(), expected);
    }
}

#[test]
fn the_limits_are_what_they_say() {
    assert_eq!(DEFAULT_MAX_PAYLOAD, 262_144);
    assert_eq!(MAX_LEASE, std::time::Duration::from_secs(43_200));
    assert!(check_batch(0).is_err());
    assert!(check_batch(1).is_ok());
    assert!(check_batch(MAX_BATCH).is_ok());
    assert!(matches!(
        check_batch(MAX_BATCH + 1),
        Err(QueueError::InvalidArgument("batch size"))
    ));
}

#[test]
fn names_and_classes_debug_as_their_text() {
    assert_eq!(
        format!("{:?}", QueueName::new("deliveries").unwrap()),
        "\"deliveries\""
    );
    assert_eq!(
        format!("{:?}", ErrorClass::new("timeout").unwrap()),
        "\"timeout\""
    );
}

#[test]
fn enqueue_options_build_what_they_name() {
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let key = DedupKey::new("order-42").unwrap();
    let o = EnqueueOptions::new()
        .run_at(at)
        .max_attempts(3)
        .dedup_key(key.clone());
    assert_eq!(
        o,
        EnqueueOptions {
            run_at: RunAt::At(at),
            max_attempts: Some(3),
            dedup_key: Some(key),
        }
    );
    let d = std::time::Duration::from_secs(90);
    assert_eq!(EnqueueOptions::new().delay(d).run_at, RunAt::After(d));
    assert_eq!(EnqueueOptions::new(), EnqueueOptions::default());
    assert_eq!(EnqueueOptions::new().run_at, RunAt::Now);
}
