//! Every form the stores persist reads back as what was written, and a
//! malformed stored or typed form is a typed error, never a panic and never
//! a valid value.
//!
//! Covered: roles, environments and the other unit enums stored by name;
//! ids (text and JSON); audit hashes, currencies, actors, event kinds and
//! whole sealed chains; key lifecycle policies and their boundaries; key
//! hashes, key records and pending reveals; vault ciphertexts (binary, text
//! and JSON forms, truncated or garbled) and `SECRET_KEY` text; bcrypt
//! hashes; backup codes; TOTP seeds in base32. Also what `Debug` shows of
//! secret-bearing values: enough to tell them apart, never the secret.
//!
//! Several tests exist because cargo-mutants could change the code they
//! cover (a `Debug` impl, a validator's boundary, a match arm) without any
//! test failing. Each one checks what a user, an operator or an attacker
//! would see, not how the code computes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use echorelay_core::Error;
use echorelay_core::access::Role;
use echorelay_core::account::backup::{self, CODES_PER_SET};
use echorelay_core::account::password::{
    PasswordError, PasswordHash, PasswordPolicy, hash_password, verify_password,
};
use echorelay_core::account::totp::{self, TotpError, TotpParams, TotpSeed};
use echorelay_core::account::{
    AccountAction, AccountRecord, AttemptScope, BackupCodeRecord, ChallengeKind, IpFamily,
    LoginFailure,
};
use echorelay_core::audit::{
    Actor, AuditDraft, AuditEvent, BillingKind, BreakKind, ConfigEntity, ConfigOp, Currency,
    EventKind, Hash32, KeyAction, seal, verify_chain,
};
use echorelay_core::config::{Project, Slug, StoredAuth};
use echorelay_core::ids::{
    DeviceId, EndpointId, EventId, InvalidId, KeyId, LineId, ProjectId, SessionId, TargetId, UserId,
};
use echorelay_core::keys::{
    Environment, KEY_LEN, KeyHash, KeyPhase, KeyRecord, LifecyclePolicy, PREFIX_LEN, PendingReveal,
    PlaintextKey, PolicyError, Supersession,
};
use echorelay_core::rewrap::SealedKind;
use echorelay_core::vault::{
    AesGcmVault, CIPHERTEXT_VERSION, Ciphertext, Keyring, MIN_CIPHERTEXT_LEN, SecretContext,
    SecretKey, SecretVault, TEXT_PREFIX, VaultError, VaultKeyId,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Two random-looking `SECRET_KEY`s whose 32-bit vault key ids collide
/// (both `c63f9bd1`), found offline by a birthday search over
/// `SHA-256("echorelay.vault.key-id.v1" || key)`.
const KEY_A: &str = "4d54257a4702d68d8b11be72fefcb83958a84ee4f235540144b11cba931b34a1";
const KEY_B: &str = "bb6cac93b3431d5df0760704c4fd5f5f8a9f5d5c542fce205a4e93e0c1bdf060";
/// KEY_A in base64, standard and URL-safe alphabets.
const KEY_A_B64: &str = "TVQlekcC1o2LEb5y/vy4OVioTuTyNVQBRLEcupMbNKE=";
const KEY_A_B64_URL: &str = "TVQlekcC1o2LEb5y_vy4OVioTuTyNVQBRLEcupMbNKE";

const DAY: i64 = 86_400;
const MAX_CADENCE: i64 = 3650 * DAY;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn t0() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap()
}

fn ctx() -> SecretContext<'static> {
    SecretContext {
        project: "prj_00112233445566778899aabbccddeeff",
        record: "tgt_0123456789abcdef0123456789abcdef",
        field: "target.auth.bearer_token",
    }
}

fn fresh_vault() -> AesGcmVault {
    AesGcmVault::new(Keyring::new(SecretKey::generate()))
}

/// A unit enum stored by name: writes `text`, reads it back.
fn assert_text_form<T>(value: T, text: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let stored = serde_json::to_value(&value).unwrap();
    assert_eq!(stored, Value::String(text.to_owned()), "{value:?}");
    let back: T = serde_json::from_value(stored).unwrap();
    assert_eq!(back, value);
}

fn assert_refused<T: DeserializeOwned + fmt::Debug>(text: &str) {
    let r = serde_json::from_value::<T>(Value::String(text.to_owned()));
    assert!(r.is_err(), "{text:?} was read as {r:?}");
}

// ---------------------------------------------------------------------------
// Roles and the other enums stored by name
// ---------------------------------------------------------------------------

#[test]
fn every_role_round_trips_through_its_stored_name() {
    let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names, ["viewer", "editor", "owner"]);
    for role in Role::ALL {
        assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        assert_eq!(role.to_string(), role.as_str());
        assert_text_form(role, role.as_str());
    }
}

#[test]
fn unknown_role_names_are_refused() {
    for s in [
        "", "Owner", "admin", "owner ", " viewer", "EDITOR", "own", "viewer\n",
    ] {
        assert!(
            matches!(s.parse::<Role>(), Err(Error::InvalidInput(_))),
            "{s:?}"
        );
        assert_refused::<Role>(s);
    }
}

#[test]
fn enums_stored_by_name_keep_their_names() {
    assert_text_form(IpFamily::V4, "v4");
    assert_text_form(IpFamily::V6, "v6");
    assert_text_form(ChallengeKind::SecondFactor, "second_factor");
    assert_text_form(ChallengeKind::Enrollment, "enrollment");
    assert_text_form(Environment::Live, "live");
    assert_text_form(Environment::Test, "test");
    assert_text_form(SealedKind::TargetSecret, "target_secret");
    assert_text_form(SealedKind::TotpSeed, "totp_seed");
    assert_text_form(SealedKind::PendingReveal, "pending_reveal");
    for bad in ["V4", "ipv4", "4", ""] {
        assert_refused::<IpFamily>(bad);
    }
    for bad in ["SecondFactor", "second-factor", "enroll"] {
        assert_refused::<ChallengeKind>(bad);
    }
    for bad in ["Live", "prod", "er_live_"] {
        assert_refused::<Environment>(bad);
    }
}

// ---------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------

fn check_id_forms<T>(make: fn([u8; 16]) -> T, prefix: &str, kind: &'static str, bytes: [u8; 16])
where
    T: FromStr<Err = InvalidId>
        + fmt::Display
        + fmt::Debug
        + PartialEq
        + Copy
        + Serialize
        + DeserializeOwned,
{
    let id = make(bytes);
    let text = id.to_string();
    assert_eq!(text, format!("{prefix}{}", hex(&bytes)));
    assert_eq!(format!("{id:?}"), text);
    assert_eq!(text.parse::<T>(), Ok(id));
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, format!("\"{text}\""));
    assert_eq!(serde_json::from_str::<T>(&json).unwrap(), id);
    // Leniency on case, if any, never names another id.
    if let Ok(upper) = format!("{prefix}{}", hex(&bytes).to_uppercase()).parse::<T>() {
        assert_eq!(upper, id);
    }

    let refused: Result<T, InvalidId> = Err(InvalidId { kind });
    let body = &text[prefix.len()..];
    let other = if prefix == "key_" { "prj_" } else { "key_" };
    for bad in [
        format!("{other}{body}"),
        format!("{prefix}{}", &body[1..]),
        format!("{text}0"),
        format!("{prefix}{}g", &body[1..]),
        format!("{prefix}{}é", &body[2..]),
        format!(" {text}"),
        format!("{text} "),
        format!("{}{body}", prefix.to_uppercase()),
        body.to_owned(),
        prefix.to_owned(),
        String::new(),
    ] {
        assert_eq!(bad.parse::<T>(), refused, "{bad:?}");
        assert_refused::<T>(&bad);
    }
}

proptest! {
    #[test]
    fn every_id_kind_round_trips_and_refuses_malformed_text(bytes in any::<[u8; 16]>()) {
        check_id_forms(ProjectId::from_bytes, "prj_", "project", bytes);
        check_id_forms(LineId::from_bytes, "lin_", "line", bytes);
        check_id_forms(EndpointId::from_bytes, "end_", "endpoint", bytes);
        check_id_forms(TargetId::from_bytes, "tgt_", "target", bytes);
        check_id_forms(KeyId::from_bytes, "key_", "key", bytes);
        check_id_forms(UserId::from_bytes, "usr_", "user", bytes);
        check_id_forms(SessionId::from_bytes, "ses_", "session", bytes);
        check_id_forms(DeviceId::from_bytes, "dev_", "device", bytes);
        check_id_forms(EventId::from_bytes, "evt_", "event", bytes);
    }
}

// ---------------------------------------------------------------------------
// Audit: hashes, currencies, actors, event kinds, chains
// ---------------------------------------------------------------------------

fn malformed_hex32() -> Vec<Value> {
    let good = "ab".repeat(32);
    vec![
        json!(""),
        json!(&good[..63]),
        json!(&good[..62]),
        json!(format!("{good}0")),
        json!(format!("{good}ab")),
        json!(format!("0x{}", &good[..62])),
        json!(format!("{}zz", &good[..62])),
        json!(format!(" {}", &good[..63])),
        json!(format!("{}é", &good[..62])),
        json!(null),
        json!(42),
        json!(vec![0u8; 32]),
    ]
}

proptest! {
    #[test]
    fn hash32_round_trips_as_lowercase_hex(b in any::<[u8; 32]>()) {
        let json = serde_json::to_string(&Hash32(b)).unwrap();
        prop_assert_eq!(&json, &format!("\"{}\"", hex(&b)));
        let back: Hash32 = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, Hash32(b));
        prop_assert_eq!(format!("{:?}", Hash32(b)), hex(&b));
        if let Ok(upper) = serde_json::from_str::<Hash32>(&json.to_uppercase()) {
            prop_assert_eq!(upper, Hash32(b));
        }
    }

    #[test]
    fn key_hash_round_trips_as_hex_and_debug_shows_a_prefix_only(b in any::<[u8; 32]>()) {
        let h = KeyHash(b);
        let json = serde_json::to_string(&h).unwrap();
        prop_assert_eq!(&json, &format!("\"{}\"", hex(&b)));
        let back: KeyHash = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, h);
        let dbg = format!("{h:?}");
        prop_assert!(dbg.contains(&hex(&b[..4])), "{}", dbg);
        prop_assert!(!dbg.contains(&hex(&b[..5])), "{}", dbg);
    }

    #[test]
    fn a_currency_is_exactly_three_uppercase_ascii_letters(s in "\\PC{0,6}") {
        let is_code = s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase());
        prop_assert_eq!(Currency::parse(&s).is_ok(), is_code);
        let read = serde_json::from_value::<Currency>(Value::String(s.clone())).is_ok();
        prop_assert_eq!(read, is_code);
    }
}

#[test]
fn malformed_hashes_do_not_load() {
    for v in malformed_hex32() {
        assert!(
            serde_json::from_value::<Hash32>(v.clone()).is_err(),
            "Hash32 from {v}"
        );
        assert!(
            serde_json::from_value::<KeyHash>(v.clone()).is_err(),
            "KeyHash from {v}"
        );
    }
}

#[test]
fn currency_text_forms() {
    for code in ["EUR", "USD", "JPY", "CHF"] {
        let c = Currency::parse(code).unwrap();
        assert_eq!(c.as_str(), code);
        assert_eq!(String::from(c), code);
        assert_eq!(Currency::try_from(code.to_owned()).unwrap(), c);
        assert_text_form(c, code);
    }
    for bad in ["", "eur", "Eur", "EU", "EURO", "E1R", "€UR", " EUR"] {
        assert!(
            matches!(Currency::parse(bad), Err(Error::InvalidInput(_))),
            "{bad:?}"
        );
        assert_refused::<Currency>(bad);
    }
}

#[test]
fn actors_keep_their_kind_and_id() {
    let (u, k) = (UserId::random(), KeyId::random());
    assert_eq!(
        serde_json::to_value(Actor::User(u)).unwrap(),
        json!({"type": "user", "id": u.to_string()})
    );
    assert_eq!(
        serde_json::to_value(Actor::ApiKey(k)).unwrap(),
        json!({"type": "api_key", "id": k.to_string()})
    );
    assert_eq!(
        serde_json::to_value(Actor::System).unwrap()["type"],
        "system"
    );
    for actor in [Actor::User(u), Actor::ApiKey(k), Actor::System] {
        let back: Actor = serde_json::from_value(serde_json::to_value(actor).unwrap()).unwrap();
        assert_eq!(back, actor);
    }
    for bad in [
        json!({"type": "user", "id": k.to_string()}),
        json!({"type": "api_key", "id": u.to_string()}),
        json!({"type": "user", "id": "usr_zz"}),
        json!({"type": "api_key"}),
        json!({"type": "robot"}),
        json!("system"),
    ] {
        assert!(
            serde_json::from_value::<Actor>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

fn billing(amount_minor: i64) -> EventKind {
    EventKind::Billing {
        billing: BillingKind::CreditPurchase,
        amount_minor,
        currency: Currency::parse("EUR").unwrap(),
        reference: None,
    }
}

fn representative_kinds() -> Vec<EventKind> {
    vec![
        EventKind::Config {
            entity: ConfigEntity::Target,
            op: ConfigOp::SecretsOpened,
            id: TargetId::random().to_string(),
        },
        EventKind::Key {
            action: KeyAction::AutoRotate,
            key_id: KeyId::random(),
            environment: Environment::Test,
            role: Role::Owner,
            successor: Some(KeyId::random()),
        },
        EventKind::Key {
            action: KeyAction::Revoke,
            key_id: KeyId::random(),
            environment: Environment::Live,
            role: Role::Viewer,
            successor: None,
        },
        EventKind::Billing {
            billing: BillingKind::BalanceAdjustment,
            amount_minor: -1250,
            currency: Currency::parse("JPY").unwrap(),
            reference: Some("ch_3Nx \u{e9}t\u{e9}".to_owned()),
        },
        billing(i64::MAX),
        EventKind::Account {
            action: AccountAction::LoginFailed,
            failure: Some(LoginFailure::ReplayedCode),
        },
        EventKind::Account {
            action: AccountAction::PasswordChanged,
            failure: None,
        },
        EventKind::Membership {
            user: UserId::random(),
            role: Some(Role::Editor),
        },
        EventKind::Membership {
            user: UserId::random(),
            role: None,
        },
        EventKind::Rewrap {
            sealed: SealedKind::PendingReveal,
            id: KeyId::random().to_string(),
        },
    ]
}

#[test]
fn event_kinds_round_trip_and_malformed_ones_are_refused() {
    for kind in representative_kinds() {
        let v = serde_json::to_value(&kind).unwrap();
        let back: EventKind = serde_json::from_value(v).unwrap();
        assert_eq!(back, kind);
    }
    let good = serde_json::to_value(billing(100)).unwrap();
    assert_eq!(good["kind"], "billing");
    assert_eq!(good["currency"], "EUR");
    let broken = |field: &str, value: Value| {
        let mut v = good.clone();
        v[field] = value;
        v
    };
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("amount_minor");
    for bad in [
        broken("currency", json!("eur")),
        broken("kind", json!("wire_transfer")),
        broken("billing", json!("chargeback")),
        broken("amount_minor", json!(12.5)),
        missing,
    ] {
        assert!(
            serde_json::from_value::<EventKind>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

fn sealed_chain(project: ProjectId, kinds: Vec<EventKind>) -> Vec<AuditEvent> {
    let actors = [
        Actor::System,
        Actor::User(UserId::random()),
        Actor::ApiKey(KeyId::random()),
    ];
    let ips = [
        "192.0.2.7".parse::<IpAddr>().unwrap(),
        "2001:db8::7".parse::<IpAddr>().unwrap(),
    ];
    let mut out: Vec<AuditEvent> = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let draft = AuditDraft {
            project: Some(project),
            at: t0() + Duration::seconds(i64::try_from(i).unwrap()),
            actor: actors[i % actors.len()],
            ip: Some(ips[i % ips.len()]),
            subject: (i % 3 == 0).then(UserId::random),
            kind,
        };
        let prev = out.last().map(AuditEvent::head);
        out.push(seal(draft, prev));
    }
    out
}

#[test]
fn a_sealed_chain_survives_its_json_form_and_still_verifies() {
    let p = ProjectId::random();
    let chain = sealed_chain(p, representative_kinds());
    let json = serde_json::to_string(&chain).unwrap();
    let back: Vec<AuditEvent> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, chain);
    let head = verify_chain(Some(p), &back, Some(chain[2].head())).unwrap();
    assert_eq!(head, chain.last().map(AuditEvent::head));
    let first = serde_json::to_value(&chain[0]).unwrap();
    assert_eq!(first["prev_hash"], json!("0".repeat(64)));
    assert_eq!(first["hash"], json!(hex(&chain[0].hash.0)));
}

/// Each way a stored chain can break is reported, and an operator can tell
/// the five apart from the message alone.
#[test]
fn every_break_of_a_stored_chain_is_named_distinctly() {
    let p = ProjectId::random();
    let chain = sealed_chain(p, vec![billing(100), billing(200), billing(300)]);
    let stored = serde_json::to_value(&chain).unwrap();
    let edited = |path: (usize, &str), value: Value| -> Vec<AuditEvent> {
        let mut v = stored.clone();
        if path.1 == "amount_minor" {
            v[path.0]["kind"]["amount_minor"] = value;
        } else {
            v[path.0][path.1] = value;
        }
        serde_json::from_value(v).unwrap()
    };
    let amount_edited = edited((1, "amount_minor"), json!(20_000));
    let relinked = edited((1, "prev_hash"), json!("00".repeat(32)));
    let cases = [
        (
            verify_chain(Some(p), &chain[1..], None),
            BreakKind::Sequence,
        ),
        (
            verify_chain(Some(p), &amount_edited, None),
            BreakKind::ContentEdited,
        ),
        (verify_chain(Some(p), &relinked, None), BreakKind::Link),
        (
            verify_chain(Some(ProjectId::random()), &chain, None),
            BreakKind::WrongChain,
        ),
        (
            verify_chain(Some(p), &chain[..2], Some(chain[2].head())),
            BreakKind::Truncated,
        ),
    ];
    let mut messages = HashSet::new();
    for (result, expected) in cases {
        let err = result.unwrap_err();
        assert_eq!(err.problem, expected);
        let problem = err.problem.to_string();
        assert!(!problem.is_empty(), "{expected:?} has no text");
        let message = err.to_string();
        assert!(message.contains(&problem), "{message}");
        messages.insert(message);
    }
    assert_eq!(messages.len(), 5, "{messages:?}");
    assert_eq!(
        verify_chain(Some(p), &amount_edited, None).unwrap_err().seq,
        2
    );
}

// ---------------------------------------------------------------------------
// Key lifecycle policy
// ---------------------------------------------------------------------------

fn policy(c: i64, o: i64, g: i64) -> Result<LifecyclePolicy, PolicyError> {
    LifecyclePolicy::new(
        Duration::seconds(c),
        Duration::seconds(o),
        Duration::seconds(g),
    )
}

fn policy_json(c: i64, o: i64, g: i64) -> Value {
    json!({"cadence_secs": c, "overlap_secs": o, "grace_secs": g})
}

fn policy_from_json(c: i64, o: i64, g: i64) -> Result<LifecyclePolicy, serde_json::Error> {
    serde_json::from_value(policy_json(c, o, g))
}

#[test]
fn lifecycle_policy_accepts_its_boundaries_and_refuses_one_past() {
    let accepted = [
        (1, 0, 0),
        (2, 1, 1),
        (DAY, DAY - 1, 0),
        (DAY, 0, DAY - 1),
        (MAX_CADENCE, 0, 0),
        (MAX_CADENCE, MAX_CADENCE - 1, MAX_CADENCE - 1),
    ];
    for (c, o, g) in accepted {
        let p = policy(c, o, g).unwrap_or_else(|e| panic!("({c}, {o}, {g}) refused: {e}"));
        assert_eq!(p.validate(), Ok(()));
        let got = (
            p.cadence().num_seconds(),
            p.overlap().num_seconds(),
            p.grace().num_seconds(),
        );
        assert_eq!(got, (c, o, g));
        assert_eq!(serde_json::to_value(p).unwrap(), policy_json(c, o, g));
        assert_eq!(policy_from_json(c, o, g).unwrap(), p, "({c}, {o}, {g})");
    }
    let refused = [
        ((0, 0, 0), PolicyError::Cadence),
        ((-1, 0, 0), PolicyError::Cadence),
        ((MAX_CADENCE + 1, 0, 0), PolicyError::Cadence),
        ((1, 1, 0), PolicyError::Overlap),
        ((DAY, DAY, 0), PolicyError::Overlap),
        ((DAY, -1, 0), PolicyError::Overlap),
        ((1, 0, 1), PolicyError::Grace),
        ((DAY, 0, DAY), PolicyError::Grace),
        ((DAY, 0, -1), PolicyError::Grace),
    ];
    for ((c, o, g), why) in refused {
        assert_eq!(policy(c, o, g), Err(why), "({c}, {o}, {g})");
        let err = policy_from_json(c, o, g).expect_err("an out-of-range policy must not load");
        assert!(err.to_string().contains(&why.to_string()), "{err}");
    }
}

#[test]
fn a_custom_policy_is_not_replaced_by_the_default_on_the_way_back() {
    let custom = policy(30 * DAY, 3 * DAY, 12 * 3600).unwrap();
    assert_ne!(custom, LifecyclePolicy::default());
    let back: LifecyclePolicy =
        serde_json::from_str(&serde_json::to_string(&custom).unwrap()).unwrap();
    assert_eq!(back, custom);
    let mut missing = policy_json(30 * DAY, 3 * DAY, 0);
    missing.as_object_mut().unwrap().remove("grace_secs");
    assert!(serde_json::from_value::<LifecyclePolicy>(missing).is_err());
}

fn valid_policy() -> impl Strategy<Value = (i64, i64, i64)> {
    prop_oneof![1..=120i64, 1..=MAX_CADENCE].prop_flat_map(|c| (Just(c), 0..c, 0..c))
}

fn bad_cadence() -> impl Strategy<Value = i64> {
    prop_oneof![-MAX_CADENCE..=0i64, (MAX_CADENCE + 1)..=(10 * MAX_CADENCE)]
}

/// A valid cadence, and a duration that is negative or not shorter than it.
fn cadence_and_out_of_range() -> impl Strategy<Value = (i64, i64)> {
    (1..=MAX_CADENCE).prop_flat_map(|c| {
        (
            Just(c),
            prop_oneof![c..=2 * MAX_CADENCE, -MAX_CADENCE..=-1i64],
        )
    })
}

proptest! {
    #[test]
    fn valid_policies_round_trip(p in valid_policy()) {
        let (c, o, g) = p;
        let made = policy(c, o, g).unwrap();
        let stored = serde_json::to_value(made).unwrap();
        let back: LifecyclePolicy = serde_json::from_value(stored).unwrap();
        prop_assert_eq!(back, made);
        prop_assert_eq!(back.overlap(), Duration::seconds(o));
        prop_assert_eq!(back.grace(), Duration::seconds(g));
    }

    #[test]
    fn out_of_range_cadence_is_refused(c in bad_cadence()) {
        prop_assert_eq!(policy(c, 0, 0), Err(PolicyError::Cadence));
        prop_assert!(policy_from_json(c, 0, 0).is_err());
    }

    #[test]
    fn overlap_outside_zero_to_cadence_is_refused((c, o) in cadence_and_out_of_range()) {
        prop_assert_eq!(policy(c, o, 0), Err(PolicyError::Overlap));
        prop_assert!(policy_from_json(c, o, 0).is_err());
    }

    #[test]
    fn grace_outside_zero_to_cadence_is_refused((c, g) in cadence_and_out_of_range()) {
        prop_assert_eq!(policy(c, 0, g), Err(PolicyError::Grace));
        prop_assert!(policy_from_json(c, 0, g).is_err());
    }
}

// ---------------------------------------------------------------------------
// Projects and slugs
// ---------------------------------------------------------------------------

proptest! {
    #[test]
    fn slugs_round_trip(s in "[a-z][a-z0-9]{0,9}(-[a-z0-9]{1,9}){0,5}") {
        prop_assume!(s.len() >= 3);
        let slug = Slug::parse(&s).unwrap();
        prop_assert_eq!(slug.as_str(), s.as_str());
        prop_assert_eq!(slug.to_string(), s.clone());
        let back: Slug = serde_json::from_str(&serde_json::to_string(&slug).unwrap()).unwrap();
        prop_assert_eq!(&back, &slug);
        prop_assert_eq!(String::from(back), s);
    }
}

#[test]
fn malformed_slugs_are_refused() {
    assert!(Slug::parse("abc").is_ok());
    assert!(Slug::parse(&"a".repeat(63)).is_ok());
    for bad in [
        "ab".to_owned(),
        "a".repeat(64),
        "Acme".to_owned(),
        "a--b".to_owned(),
        "ab-".to_owned(),
        "1abc".to_owned(),
        "-abc".to_owned(),
        "ab c".to_owned(),
        "ab_c".to_owned(),
        "caf\u{e9}".to_owned(),
    ] {
        assert!(Slug::parse(&bad).is_err(), "{bad:?}");
        assert_refused::<Slug>(&bad);
    }
}

#[test]
fn a_project_keeps_its_policy_and_older_rows_get_defaults() {
    let custom = policy(30 * DAY, 3 * DAY, 12 * 3600).unwrap();
    let project = Project {
        id: ProjectId::random(),
        slug: Slug::parse("acme-prod").unwrap(),
        name: "Acme (prod)".to_owned(),
        key_policy: custom,
        created_at: t0(),
        version: 7,
        api_keys_manage_keys: true,
    };
    let stored = serde_json::to_value(&project).unwrap();
    let back: Project = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(back, project);

    let mut older = stored.clone();
    let fields = older.as_object_mut().unwrap();
    fields.remove("version");
    fields.remove("api_keys_manage_keys");
    let older: Project = serde_json::from_value(older).unwrap();
    assert_eq!((older.version, older.api_keys_manage_keys), (0, false));
    assert_eq!(older.key_policy, custom);

    let mut bad_policy = stored.clone();
    bad_policy["key_policy"]["overlap_secs"] = json!(30 * DAY);
    let mut bad_slug = stored;
    bad_slug["slug"] = json!("Acme");
    for bad in [bad_policy, bad_slug] {
        assert!(
            serde_json::from_value::<Project>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------------------
// API keys: plaintext, hash, records, pending reveals
// ---------------------------------------------------------------------------

fn key_record(now: DateTime<Utc>, key: &PlaintextKey) -> KeyRecord {
    KeyRecord {
        id: KeyId::random(),
        project: ProjectId::random(),
        environment: key.environment(),
        role: Role::Editor,
        hash: key.hash(),
        hint: key.hint(),
        label: "deploy bot".to_owned(),
        created_by: Actor::User(UserId::random()),
        created_at: now,
        rotate_at: now + Duration::days(83),
        predecessor: None,
        superseded: None,
        revoked_at: None,
        pending_reveal: None,
        collected_by: None,
    }
}

#[test]
fn a_plaintext_key_parses_back_to_the_same_hash_and_debug_hides_it() {
    for env in [Environment::Live, Environment::Test] {
        let key = PlaintextKey::generate(env);
        let secret = key.expose_secret();
        let again = PlaintextKey::parse(secret).unwrap();
        assert_eq!(again.environment(), env);
        assert_eq!(again.hash(), key.hash());
        assert_eq!(key.hash(), KeyHash::of(secret));
        assert_eq!(again.hint(), key.hint());

        let dbg = format!("{key:?}");
        assert!(dbg.contains(&key.hint()), "{dbg}");
        assert!(dbg.contains(env.prefix()), "{dbg}");
        assert!(!dbg.contains(secret), "{dbg}");
        for window in secret.as_bytes()[PREFIX_LEN..KEY_LEN - 4].windows(6) {
            let window = std::str::from_utf8(window).unwrap();
            assert!(!dbg.contains(window), "{dbg} shows {window}");
        }
        let hash_dbg = format!("{:?}", key.hash());
        assert!(hash_dbg.contains(&hex(&key.hash().0[..4])), "{hash_dbg}");
        assert!(!hash_dbg.contains(&hex(&key.hash().0)), "{hash_dbg}");
    }
}

#[test]
fn a_stored_key_record_answers_for_its_phase() {
    let now = t0();
    let key = PlaintextKey::generate(Environment::Live);
    let fresh = key_record(now, &key);
    assert!(fresh.is_current());
    assert_eq!(
        fresh.phase(now),
        Some(KeyPhase::Active {
            rotate_at: fresh.rotate_at
        })
    );

    let revoked = KeyRecord {
        revoked_at: Some(now),
        ..fresh.clone()
    };
    assert!(!revoked.is_current());
    assert_eq!(revoked.phase(now), None);

    let successor = KeyId::random();
    let sup = Supersession {
        successor,
        rotated_at: now,
        expires_at: now + Duration::days(7),
        grace_ends_at: now + Duration::days(8),
    };
    let rotated = KeyRecord {
        superseded: Some(sup),
        ..fresh.clone()
    };
    assert!(!rotated.is_current());
    assert_eq!(
        rotated.phase(now),
        Some(KeyPhase::Overlap {
            successor,
            expires_at: sup.expires_at
        })
    );
    assert_eq!(
        rotated.phase(sup.expires_at),
        Some(KeyPhase::Grace {
            successor,
            until: sup.grace_ends_at
        })
    );
    assert_eq!(rotated.phase(sup.grace_ends_at), None);

    // A successor collected by presenting its predecessor names it; a
    // record stored before the field existed reads back without one.
    let collected = KeyRecord {
        collected_by: Some(KeyId::random()),
        ..fresh.clone()
    };
    let mut old_form = serde_json::to_value(&fresh).unwrap();
    old_form.as_object_mut().unwrap().remove("collected_by");
    let old: KeyRecord = serde_json::from_value(old_form).unwrap();
    assert_eq!(old, fresh);
    for rec in [fresh, revoked, rotated, collected] {
        let back: KeyRecord = serde_json::from_value(serde_json::to_value(&rec).unwrap()).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.phase(now), rec.phase(now));
        assert_eq!(back.is_current(), rec.is_current());
        // A logged record does not print the whole key hash.
        assert!(!format!("{back:?}").contains(&hex(&back.hash.0)));
    }
}

#[test]
fn a_pending_reveal_survives_storage_and_opens_to_the_successor_key() {
    let vault = AesGcmVault::new(Keyring::new(SecretKey::parse(KEY_A).unwrap()));
    let now = t0();
    let key = PlaintextKey::generate(Environment::Test);
    let mut rec = key_record(now, &key);
    rec.predecessor = Some(KeyId::random());
    rec.created_by = Actor::System;
    let (project, record) = (rec.project.to_string(), rec.id.to_string());
    // The documented binding of a pending reveal (rewrap module docs).
    let ctx = SecretContext {
        project: &project,
        record: &record,
        field: "api_key.pending_reveal",
    };
    let sealed = vault.seal_str(key.expose_secret(), &ctx).unwrap();
    rec.pending_reveal = Some(PendingReveal {
        ciphertext: sealed.clone(),
        until: now + Duration::days(8),
    });

    let stored = serde_json::to_value(&rec).unwrap();
    assert_eq!(stored["hash"], json!(hex(&rec.hash.0)));
    assert_eq!(
        stored["pending_reveal"]["ciphertext"],
        json!(sealed.to_text())
    );
    let back: KeyRecord = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(back, rec);
    let pending = back.pending_reveal.as_ref().unwrap();
    let opened = vault.open_string(&pending.ciphertext, &ctx).unwrap();
    let revealed = PlaintextKey::parse(opened.expose_secret()).unwrap();
    assert_eq!(revealed.hash(), back.hash);
    let other = KeyId::random().to_string();
    let elsewhere = SecretContext {
        record: &other,
        ..ctx
    };
    assert_eq!(
        vault.open(&pending.ciphertext, &elsewhere).err(),
        Some(VaultError::Decrypt)
    );

    let h = hex(&rec.hash.0);
    let broken = |field: &str, value: Value| {
        let mut v = stored.clone();
        v[field] = value;
        v
    };
    for bad in [
        broken("hash", json!(&h[..63])),
        broken("hash", json!(format!("{}zz", &h[..62]))),
        broken("role", json!("admin")),
        broken("environment", json!("prod")),
        broken("id", json!(rec.project.to_string())),
        broken("created_by", json!({"type": "robot"})),
        broken(
            "pending_reveal",
            json!({"ciphertext": "erv1:AAAA", "until": "2023-11-14T22:13:20Z"}),
        ),
        broken(
            "pending_reveal",
            json!({"ciphertext": sealed.to_text(), "until": "soon"}),
        ),
    ] {
        assert!(
            serde_json::from_value::<KeyRecord>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------------------
// Vault: ciphertext forms, SECRET_KEY text, keyring
// ---------------------------------------------------------------------------

proptest! {
    #[test]
    fn ciphertext_forms_round_trip(pt in proptest::collection::vec(any::<u8>(), 0..200)) {
        let vault = fresh_vault();
        let ct = vault.seal(&pt, &ctx()).unwrap();
        prop_assert_eq!(ct.len(), MIN_CIPHERTEXT_LEN + pt.len());
        prop_assert!(!ct.is_empty());
        prop_assert_eq!(ct.version(), CIPHERTEXT_VERSION);

        let bytes = ct.to_bytes();
        prop_assert_eq!(bytes.len(), ct.len());
        let from_bytes = Ciphertext::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&from_bytes, &ct);

        let text = ct.to_text();
        prop_assert!(text.starts_with(TEXT_PREFIX));
        prop_assert_eq!(&ct.to_string(), &text);
        let from_text = Ciphertext::from_text(&text).unwrap();
        prop_assert_eq!(&from_text, &ct);
        let parsed: Ciphertext = text.parse().unwrap();
        prop_assert_eq!(&parsed, &ct);

        let json = serde_json::to_string(&ct).unwrap();
        prop_assert_eq!(&json, &format!("\"{text}\""));
        let back: Ciphertext = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &ct);
        let opened = vault.open(&back, &ctx()).unwrap();
        prop_assert_eq!(opened.as_slice(), pt.as_slice());
    }

    /// A flipped byte is refused with the error for the part it hit.
    #[test]
    fn a_flipped_byte_is_a_typed_error_never_the_plaintext(
        pt in proptest::collection::vec(any::<u8>(), 0..64),
        at in any::<Index>(),
        mask in 1u8..=255,
    ) {
        let vault = fresh_vault();
        let ct = vault.seal(&pt, &ctx()).unwrap();
        let mut bytes = ct.to_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        let opened = Ciphertext::from_bytes(&bytes)
            .and_then(|c| vault.open(&c, &ctx()).map(|p| p.to_vec()));
        let expected = match i {
            0 => VaultError::UnsupportedVersion(CIPHERTEXT_VERSION ^ mask),
            1..=4 => {
                let mut id = ct.key_id().0;
                id[i - 1] ^= mask;
                VaultError::UnknownKey(VaultKeyId(id))
            }
            _ => VaultError::Decrypt,
        };
        prop_assert_eq!(opened.err(), Some(expected));
    }

    #[test]
    fn a_truncated_ciphertext_is_a_typed_error(
        pt in proptest::collection::vec(any::<u8>(), 0..64),
        cut in any::<Index>(),
    ) {
        let vault = fresh_vault();
        let ct = vault.seal(&pt, &ctx()).unwrap();
        let bytes = ct.to_bytes();
        let n = cut.index(bytes.len());
        match Ciphertext::from_bytes(&bytes[..n]) {
            Err(e) => {
                prop_assert!(n < MIN_CIPHERTEXT_LEN, "{} bytes refused: {:?}", n, e);
                prop_assert!(matches!(e, VaultError::Malformed { .. }), "{:?}", e);
            }
            Ok(c) => {
                prop_assert!(n >= MIN_CIPHERTEXT_LEN);
                prop_assert_eq!(vault.open(&c, &ctx()).err(), Some(VaultError::Decrypt));
            }
        }
        let text = ct.to_text();
        let m = cut.index(text.len());
        let result = Ciphertext::from_text(&text[..m])
            .and_then(|c| vault.open(&c, &ctx()).map(|p| p.to_vec()));
        match result {
            Ok(_) => prop_assert!(false, "{} of {} characters opened", m, text.len()),
            Err(e) => prop_assert!(
                matches!(e, VaultError::Malformed { .. } | VaultError::Decrypt),
                "{:?}", e
            ),
        }
    }

    #[test]
    fn a_garbled_text_form_never_opens(
        pt in proptest::collection::vec(any::<u8>(), 0..64),
        at in any::<Index>(),
        c in proptest::sample::select(vec!['A', 'z', '0', '-', '_', '+', '/', '=', ' ', '\u{e9}']),
    ) {
        let vault = fresh_vault();
        let text = vault.seal(&pt, &ctx()).unwrap().to_text();
        let mut chars: Vec<char> = text.chars().collect();
        let i = TEXT_PREFIX.len() + at.index(chars.len() - TEXT_PREFIX.len());
        prop_assume!(chars[i] != c);
        chars[i] = c;
        let garbled: String = chars.into_iter().collect();
        let result = Ciphertext::from_text(&garbled)
            .and_then(|ct| vault.open(&ct, &ctx()).map(|p| p.to_vec()));
        prop_assert!(result.is_err());
        let read = serde_json::from_value::<Ciphertext>(Value::String(garbled));
        if let Ok(ct) = read {
            prop_assert!(vault.open(&ct, &ctx()).is_err());
        }
    }
}

#[test]
fn malformed_ciphertext_text_is_refused_with_a_typed_error() {
    let vault = fresh_vault();
    let ct = vault.seal_str("s3cr3t-t0ken", &ctx()).unwrap();
    let text = ct.to_text();
    let body = &text[TEXT_PREFIX.len()..];
    let malformed = [
        String::new(),
        "erv1:".to_owned(),
        body.to_owned(),
        format!("erv2:{body}"),
        format!("ERV1:{body}"),
        format!(" {text}"),
        format!("{text}\n"),
        format!("{text}="),
        format!("erv1:+{}", &body[1..]),
    ];
    for bad in &malformed {
        let r = Ciphertext::from_text(bad);
        assert!(
            matches!(r, Err(VaultError::Malformed { .. })),
            "{bad:?}: {r:?}"
        );
        assert!(serde_json::from_value::<Ciphertext>(Value::String(bad.clone())).is_err());
    }
    let mut v2 = ct.to_bytes();
    v2[0] = 2;
    assert_eq!(
        Ciphertext::from_bytes(&v2).err(),
        Some(VaultError::UnsupportedVersion(2))
    );
    let empty = Ciphertext::from_bytes(&[]);
    assert!(
        matches!(empty, Err(VaultError::Malformed { .. })),
        "{empty:?}"
    );

    // Wrong JSON type: the error says what a ciphertext looks like.
    let err = serde_json::from_str::<Ciphertext>("42").unwrap_err();
    assert!(err.to_string().contains("erv1:"), "{err}");
}

#[test]
fn ciphertext_debug_names_key_and_length_not_content() {
    let vault = fresh_vault();
    let ct = vault.seal(b"", &ctx()).unwrap();
    assert_eq!(ct.len(), MIN_CIPHERTEXT_LEN);
    assert!(!ct.is_empty());
    let ct = vault.seal_str("hunter2-hunter2", &ctx()).unwrap();
    let dbg = format!("{ct:?}");
    assert!(dbg.contains("Ciphertext"), "{dbg}");
    assert!(dbg.contains(&ct.key_id().to_string()), "{dbg}");
    assert!(dbg.contains(&ct.len().to_string()), "{dbg}");
    assert!(!dbg.contains(&ct.to_text()[TEXT_PREFIX.len()..]), "{dbg}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
}

#[test]
fn stored_target_auth_keeps_its_sealed_secrets() {
    let vault = fresh_vault();
    let token = vault.seal_str("tok_live_abc123", &ctx()).unwrap();
    let password = vault.seal_str("correct horse", &ctx()).unwrap();
    for auth in [
        StoredAuth::None,
        StoredAuth::Bearer {
            token: token.clone(),
        },
        StoredAuth::Basic {
            username: "relay".to_owned(),
            password,
        },
    ] {
        let back: StoredAuth =
            serde_json::from_value(serde_json::to_value(&auth).unwrap()).unwrap();
        assert_eq!(back, auth);
    }
    let stored = serde_json::to_value(StoredAuth::Bearer {
        token: token.clone(),
    })
    .unwrap();
    assert_eq!(stored, json!({"type": "bearer", "token": token.to_text()}));
    let text = token.to_text();
    for bad in [
        json!({"type": "bearer", "token": &text[TEXT_PREFIX.len()..]}),
        json!({"type": "bearer", "token": "erv1:AAAA"}),
        json!({"type": "bearer"}),
        json!({"type": "digest", "token": text}),
    ] {
        assert!(
            serde_json::from_value::<StoredAuth>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn secret_key_text_forms_and_length_limits() {
    let key = SecretKey::parse(KEY_A).unwrap();
    for form in [
        KEY_A.to_uppercase(),
        format!("  {KEY_A}\n"),
        KEY_A_B64.to_owned(),
        KEY_A_B64.trim_end_matches('=').to_owned(),
        KEY_A_B64_URL.to_owned(),
    ] {
        assert_eq!(SecretKey::parse(&form).unwrap().id(), key.id(), "{form:?}");
    }
    let dbg = format!("{key:?}");
    assert!(dbg.contains(&key.id().to_string()), "{dbg}");
    assert!(!dbg.to_lowercase().contains(&KEY_A[..8]), "{dbg}");

    let reason = |s: &str| match SecretKey::parse(s) {
        Err(VaultError::InvalidSecretKey { reason }) => reason,
        other => panic!("{} characters: {other:?}", s.len()),
    };
    // 63 and 65 hex digits: one short, one over.
    assert!(reason(&KEY_A[..63]).contains("wrong length"));
    assert!(reason(format!("{KEY_A}0").as_str()).contains("wrong length"));
    // Text over 88 characters (the most any key form can need) is refused
    // before decoding; up to 88 it is judged on what it is.
    let long88 = format!("{KEY_A}{}", &KEY_B[..24]);
    let long89 = format!("{KEY_A}{}", &KEY_B[..25]);
    assert_eq!((long88.len(), long89.len()), (88, 89));
    assert!(
        !reason(long88.as_str()).contains("too long"),
        "{}",
        reason(long88.as_str())
    );
    assert!(
        reason(long89.as_str()).contains("too long"),
        "{}",
        reason(long89.as_str())
    );
}

proptest! {
    #[test]
    fn secret_key_hex_forms_agree(bytes in any::<[u8; 32]>()) {
        let lower = hex(&bytes);
        let direct = SecretKey::try_from_bytes(bytes).map(|k| k.id());
        prop_assert_eq!(SecretKey::parse(&lower).map(|k| k.id()), direct.clone());
        prop_assert_eq!(SecretKey::parse(&lower.to_uppercase()).map(|k| k.id()), direct.clone());
        prop_assert_eq!(SecretKey::parse(&format!(" \t{lower}\n")).map(|k| k.id()), direct);
        prop_assert!(SecretKey::parse(&lower[..63]).is_err());
        let too_long = format!("{lower}0");
        prop_assert!(SecretKey::parse(&too_long).is_err());
    }
}

#[test]
fn a_stored_ciphertext_survives_a_key_rotation() {
    let old = SecretKey::parse(KEY_A).unwrap();
    let new = SecretKey::generate();
    let stored = AesGcmVault::new(Keyring::new(old.clone()))
        .seal_str("whsec_token", &ctx())
        .unwrap()
        .to_text();
    let rotated = AesGcmVault::new(Keyring::new(new.clone()).with_previous(old.clone()));
    assert_eq!(
        rotated.key_ids().collect::<Vec<_>>(),
        vec![new.id(), old.id()]
    );
    assert_eq!(rotated.current_key_id(), new.id());

    let ct: Ciphertext = stored.parse().unwrap();
    assert_eq!(ct.key_id(), old.id());
    assert!(!rotated.is_current(&ct));
    assert_eq!(
        rotated.open_string(&ct, &ctx()).unwrap().expose_secret(),
        "whsec_token"
    );
    let rewrapped = rotated.rewrap(&ct, &ctx()).unwrap();
    assert_eq!(rewrapped.key_id(), new.id());
    assert!(rotated.is_current(&rewrapped));

    let only_new = AesGcmVault::new(Keyring::new(new));
    assert_eq!(
        only_new.open(&ct, &ctx()).err(),
        Some(VaultError::UnknownKey(old.id()))
    );
    // Adding a key that is already in the ring has no effect.
    let twice = Keyring::new(old.clone()).with_previous(SecretKey::parse(KEY_A).unwrap());
    assert_eq!(twice.key_ids().count(), 1);
}

/// Two different keys can share a 32-bit id. Both stay in the ring, and what
/// either sealed still opens.
#[test]
fn keys_whose_ids_collide_are_both_kept_and_both_open() {
    let a = SecretKey::parse(KEY_A).unwrap();
    let b = SecretKey::parse(KEY_B).unwrap();
    assert_eq!(a.id(), b.id(), "precondition: the two keys share an id");
    let by_a = AesGcmVault::new(Keyring::new(a.clone()))
        .seal(b"sealed under a", &ctx())
        .unwrap();
    let by_b = AesGcmVault::new(Keyring::new(b.clone()))
        .seal(b"sealed under b", &ctx())
        .unwrap();
    let ring = Keyring::new(a).with_previous(b);
    assert_eq!(ring.key_ids().count(), 2);
    let vault = AesGcmVault::new(ring);
    assert_eq!(vault.key_ids().count(), 2);
    let opened_a = vault.open(&by_a, &ctx()).unwrap();
    let opened_b = vault.open(&by_b, &ctx()).unwrap();
    assert_eq!(opened_a.as_slice(), &b"sealed under a"[..]);
    assert_eq!(opened_b.as_slice(), &b"sealed under b"[..]);
}

// ---------------------------------------------------------------------------
// Accounts: password hashes, backup codes, TOTP seeds
// ---------------------------------------------------------------------------

const PASSWORD: &str = "velvet-otter-quarry-1987";

/// One bcrypt hash made by the crate (cost 10), shared by the tests.
fn made_hash() -> &'static PasswordHash {
    static HASH: OnceLock<PasswordHash> = OnceLock::new();
    HASH.get_or_init(|| {
        hash_password(
            &SecretString::from(PASSWORD),
            PasswordPolicy::new(10).unwrap(),
        )
        .unwrap()
    })
}

fn with_char(s: &str, i: usize, c: char) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    chars[i] = c;
    chars.into_iter().collect()
}

#[test]
fn a_password_hash_survives_its_stored_forms_and_still_verifies() {
    let h = made_hash();
    let s = h.as_str();
    assert_eq!(s.len(), 60);
    assert!(s.starts_with("$2y$10$"), "{h:?}");
    assert_eq!(h.cost(), 10);
    assert_eq!(&PasswordHash::parse(s).unwrap(), h);
    assert_eq!(&s.parse::<PasswordHash>().unwrap(), h);
    let json = serde_json::to_string(h).unwrap();
    assert_eq!(json, format!("\"{s}\""));
    let back: PasswordHash = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, h);
    assert_eq!(String::from(back.clone()), s);
    assert_eq!(
        verify_password(&SecretString::from(PASSWORD), &back),
        Ok(true)
    );
    assert_eq!(
        verify_password(&SecretString::from("velvet-otter-quarry-1988"), &back),
        Ok(false)
    );

    let dbg = format!("{h:?}");
    assert!(dbg.contains("$2y$10$"), "{dbg}");
    assert!(!dbg.contains(&s[7..29]), "Debug shows the salt: {dbg}");
    assert!(!dbg.contains(&s[29..]), "Debug shows the digest: {dbg}");

    let account = AccountRecord {
        id: UserId::random(),
        email: "ada@example.org".to_owned(),
        password_hash: h.clone(),
        epoch: 3,
        created_at: t0(),
    };
    let stored = serde_json::to_value(&account).unwrap();
    assert_eq!(stored["password_hash"], json!(s));
    assert_eq!(
        serde_json::from_value::<AccountRecord>(stored.clone()).unwrap(),
        account
    );
    let mut broken = stored;
    broken["password_hash"] = json!(&s[..59]);
    assert!(serde_json::from_value::<AccountRecord>(broken).is_err());
}

#[test]
fn malformed_password_hashes_are_refused() {
    let s = made_hash().as_str();
    let malformed = [
        String::new(),
        s[..59].to_owned(),
        format!("{s}x"),
        format!("{s}\n"),
        with_char(s, 0, '#'),
        with_char(s, 1, '3'),
        with_char(s, 2, 'x'),
        with_char(s, 3, '-'),
        with_char(s, 6, '-'),
        format!("{}03{}", &s[..4], &s[6..]),
        format!("{}32{}", &s[..4], &s[6..]),
        format!("{}1a{}", &s[..4], &s[6..]),
        with_char(s, 20, '!'),
        with_char(s, 20, '+'),
        with_char(s, 20, '='),
        with_char(s, 20, '\u{e9}'),
    ];
    for bad in &malformed {
        assert_eq!(
            PasswordHash::parse(bad),
            Err(PasswordError::MalformedHash),
            "{bad:?}"
        );
        assert_refused::<PasswordHash>(bad);
    }
}

proptest! {
    /// One character changed anywhere: either still a well-formed hash
    /// (kept exactly as given) or the typed error; reading it from JSON
    /// agrees.
    #[test]
    fn a_garbled_password_hash_parses_exactly_or_is_malformed(
        at in 0usize..60,
        c in proptest::char::range(' ', '~'),
    ) {
        let s = with_char(made_hash().as_str(), at, c);
        let parsed = PasswordHash::parse(&s);
        let read = serde_json::from_value::<PasswordHash>(Value::String(s.clone())).is_ok();
        prop_assert_eq!(read, parsed.is_ok());
        match parsed {
            Ok(h) => prop_assert_eq!(h.as_str(), s.as_str()),
            Err(e) => prop_assert_eq!(e, PasswordError::MalformedHash),
        }
    }
}

const CROCKFORD: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

#[test]
fn backup_codes_are_shown_in_groups_of_four_and_stored_records_still_match() {
    let set = backup::generate();
    assert_eq!(set.codes.len(), CODES_PER_SET);
    for code in &set.codes {
        let code = code.expose_secret();
        let groups: Vec<&str> = code.split('-').collect();
        assert_eq!(groups.len(), 4, "{code}");
        for g in groups {
            assert_eq!(g.len(), 4, "{code}");
            assert!(g.bytes().all(|b| CROCKFORD.contains(&b)), "{code}");
        }
    }
    let dbg = format!("{set:?}");
    assert!(dbg.contains(&CODES_PER_SET.to_string()), "{dbg}");
    assert!(dbg.contains("redacted"), "{dbg}");
    for code in &set.codes {
        let code = code.expose_secret();
        assert!(!dbg.contains(code), "{dbg}");
        assert!(!dbg.contains(&code.replace('-', "")), "{dbg}");
    }

    let stored = serde_json::to_string(&set.records).unwrap();
    let back: Vec<BackupCodeRecord> = serde_json::from_str(&stored).unwrap();
    assert_eq!(back, set.records);
    for (i, code) in set.codes.iter().enumerate() {
        let found = backup::find(&back, code).map(|r| r.index);
        assert_eq!(found, Some(u8::try_from(i).unwrap()));
    }
}

#[test]
fn backup_code_typing_is_forgiving_but_only_well_formed_codes_normalize() {
    let set = backup::generate();
    for code in &set.codes {
        let code = code.expose_secret();
        let canonical = backup::normalize(code)
            .expect("a generated code normalizes")
            .to_vec();
        assert_eq!(canonical.len(), 16);
        for typed in [
            code.to_uppercase(),
            code.replace('-', " "),
            code.replace('-', ""),
            format!(" {} ", code.replace('-', "  ")),
            code.replace('1', "l").replace('0', "O"),
            code.replace('1', "I"),
        ] {
            let got = backup::normalize(&typed).map(|n| n.to_vec());
            assert_eq!(got.as_ref(), Some(&canonical), "{typed:?}");
        }
    }
    assert!(backup::normalize("0123-4567-89ab-cdef").is_some());
    for bad in [
        "",
        "abc",
        "sh0rt",
        "0123-4567-89ab-cde",
        "0123-4567-89ab-cdef-0",
        "uuuu-uuuu-uuuu-uuuu",
        "0123-4567-89ab-cdeu",
        "0123-4567-89ab-cde!",
        "0123_4567_89ab_cdef",
    ] {
        assert!(backup::normalize(bad).is_none(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn totp_seed_base32_round_trips_however_it_is_typed(
        seed_bytes in proptest::collection::vec(any::<u8>(), 16..=64),
    ) {
        let seed = TotpSeed::from_bytes(&seed_bytes).unwrap();
        let b32 = seed.to_base32();
        let text = b32.expose_secret();
        prop_assert_eq!(text.len(), (seed_bytes.len() * 8).div_ceil(5));
        prop_assert!(text.bytes().all(|b| b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".contains(&b)));
        let back = TotpSeed::from_base32(text).unwrap();
        prop_assert_eq!(back.expose_bytes(), seed_bytes.as_slice());

        // As people and apps type it: lowercase, grouped, padded.
        let mut sloppy = String::new();
        for (i, ch) in text.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                sloppy.push(' ');
            }
            sloppy.push(ch.to_ascii_lowercase());
        }
        sloppy.push_str(&"=".repeat((8 - text.len() % 8) % 8));
        let again = TotpSeed::from_base32(&sloppy).unwrap();
        prop_assert_eq!(again.expose_bytes(), seed_bytes.as_slice());
    }
}

#[test]
fn totp_seed_text_refuses_what_is_not_a_seed() {
    let seed = TotpSeed::from_bytes(b"12345678901234567890").unwrap();
    let b32 = seed.to_base32();
    let text = b32.expose_secret();
    assert_eq!(text, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert!(!format!("{seed:?}").contains(text));
    for c in ['0', '1', '8', '9', '-', '!', '\u{e9}'] {
        let bad = with_char(text, 3, c);
        assert_eq!(
            TotpSeed::from_base32(&bad).err(),
            Some(TotpError::BadSeed),
            "{bad:?}"
        );
    }
    // 15 bytes is too short, 16 and 64 are the limits, 65 too long.
    assert_eq!(
        TotpSeed::from_base32("GEZDGNBVGY3TQOJQGEZDGNBV").err(),
        Some(TotpError::BadSeed)
    );
    assert_eq!(TotpSeed::from_base32("").err(), Some(TotpError::BadSeed));
    assert_eq!(
        TotpSeed::from_bytes(&[7; 15]).err(),
        Some(TotpError::BadSeed)
    );
    assert!(TotpSeed::from_bytes(&[7; 16]).is_ok());
    assert!(TotpSeed::from_bytes(&[7; 64]).is_ok());
    assert_eq!(
        TotpSeed::from_bytes(&[7; 65]).err(),
        Some(TotpError::BadSeed)
    );
}

/// With the RFC 6238 SHA-1 seed, steps 56 721 294 and 56 721 310 share the
/// code 903408 (found offline). Both fall in one ±10-step window. The
/// earlier step must be the one returned: the caller then refuses every
/// step up to the returned one as a replay, so returning the later step
/// would refuse the user's next 16 codes (8 minutes).
#[test]
fn when_two_windows_share_a_code_the_earlier_step_is_returned() {
    let seed = TotpSeed::from_bytes(b"12345678901234567890").unwrap();
    let params = TotpParams {
        skew: 10,
        ..TotpParams::default()
    };
    assert_eq!(params.validate(), Ok(()));
    let (early, late, now_step) = (56_721_294u64, 56_721_310u64, 56_721_304u64);
    for step in [early, late] {
        let code = totp::code_for_step(&seed, &params, step).unwrap();
        assert_eq!(code.as_str(), "903408", "precondition at step {step}");
    }
    let now = now_step * 30;
    assert_eq!(totp::step_at(&params, now), now_step);
    assert_eq!(
        totp::match_step(&seed, &params, "903408", now),
        Ok(Some(early))
    );
    assert_eq!(
        totp::match_step(&seed, &params, " 903408\n", now),
        Ok(Some(early))
    );
}

/// A throttle counter is stored under its scope's text key (the Postgres
/// store's `attempts.scope`): each kind and subject has its own exact key,
/// so one account's lockout or one source's throttle never counts against
/// another, and IPv6 sources share the counter of their /64.
#[test]
fn attempt_scopes_have_distinct_stored_keys() {
    let (a, b) = (UserId::random(), UserId::random());
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let cases = [
        (AttemptScope::SecondFactor(a), format!("second_factor:{a}")),
        (AttemptScope::SecondFactor(b), format!("second_factor:{b}")),
        (AttemptScope::Password(a), format!("password:{a}")),
        (AttemptScope::Password(b), format!("password:{b}")),
        (
            AttemptScope::password_source(ip("192.0.2.7")),
            "password_source:192.0.2.7".to_owned(),
        ),
        (
            AttemptScope::password_source(ip("::ffff:192.0.2.8")),
            "password_source:192.0.2.8".to_owned(),
        ),
        (
            AttemptScope::password_source(ip("2001:db8:1:2:aaaa::1")),
            "password_source:2001:db8:1:2::/64".to_owned(),
        ),
        (
            AttemptScope::password_source(ip("2001:db8:1:3::1")),
            "password_source:2001:db8:1:3::/64".to_owned(),
        ),
    ];
    let mut seen = HashSet::new();
    for (scope, key) in &cases {
        assert_eq!(&scope.key(), key, "{scope:?}");
        assert!(seen.insert(scope.key()), "{scope:?} shares a key");
    }
    assert_eq!(
        AttemptScope::password_source(ip("2001:db8:1:2::5")).key(),
        AttemptScope::password_source(ip("2001:db8:1:2:ffff::9")).key(),
        "one /64, one counter"
    );
}

/// An email is stored normalized (trimmed, lowercased), so the same
/// address always finds the same account; anything that is not
/// `name@domain` in at most 254 bytes is refused.
#[test]
fn emails_are_stored_normalized_and_checked_at_their_boundaries() {
    use echorelay_core::account::service::normalize_email;
    assert_eq!(
        normalize_email("  Ana@Example.COM \n").unwrap(),
        "ana@example.com"
    );
    let longest = format!("{}@example.com", "a".repeat(254 - "@example.com".len()));
    assert_eq!(normalize_email(&longest).unwrap(), longest);
    let too_long = format!("a{longest}");
    for bad in [
        too_long.as_str(),
        "ana maria@example.com",
        "ana@exa\u{7}mple.com",
        "ana@exa\u{a0}mple.com",
        "@example.com",
        "ana@",
        "ana@example.com@evil.test",
        "ana.example.com",
        "",
    ] {
        assert!(
            matches!(normalize_email(bad), Err(Error::InvalidInput(_))),
            "{bad:?}"
        );
    }
}
