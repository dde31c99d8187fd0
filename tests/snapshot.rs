//! Logical snapshots through the one handle (issue 18, items 3 and 7):
//! the in-memory drill (fill a relay through the library, back it up to
//! the local S3 server, lose the store, restore into a new one, and every
//! key, secret, TOTP login and audit chain works as before), the
//! snapshot parser's refusals, one per rule, and the fuzz target's seeds.
#![cfg(feature = "backup")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::Duration;
use echorelay::core::access::Caller;
use echorelay::core::access::surface::{ConfigWrite, Keys, Members};
use echorelay::core::account::service::{PasswordStep, SecondFactor};
use echorelay::core::account::totp::{TotpSeed, code_for_step, step_at};
use echorelay::core::audit::ChainHead;
use echorelay::core::backup::crypt::{Identities, Recipients};
use echorelay::core::backup::service::compare_heads;
use echorelay::core::backup::snapshot::{self, SnapshotError};
use echorelay::core::backup::{BackupError, BackupTarget};
use echorelay::core::clock::ManualClock;
use echorelay::core::config::{AuthInput, NewTarget};
use echorelay::core::ids::TargetId;
use echorelay::core::keys::{Environment, MintRequest, RotateOptions};
use echorelay::core::ports::SnapshotData;
use echorelay::prelude::*;
use secrecy::{ExposeSecret, SecretString};

const PASSWORD: &str = "correct horse battery staple";

fn ip() -> IpAddr {
    "198.51.100.7".parse().unwrap()
}

fn keypair() -> (Recipients, Arc<Identities>) {
    let id = age::x25519::Identity::generate();
    let r = Recipients::parse(&id.to_public().to_string()).unwrap();
    let text = format!("{}\n", id.to_string().expose_secret());
    (r, Arc::new(Identities::parse(&text).unwrap()))
}

fn relay(keyring: &Keyring, clock: &ManualClock) -> EchoRelay {
    EchoRelay::builder()
        .keyring(keyring.clone())
        .clock(Arc::new(clock.clone()))
        .account_policy(echorelay_testkit::test_account_policy())
        .build()
        .unwrap()
}

fn code(relay: &EchoRelay, clock: &ManualClock, seed: &TotpSeed) -> SecretString {
    let params = relay.accounts().policy().totp;
    let step = step_at(&params, u64::try_from(clock.now().timestamp()).unwrap());
    SecretString::from(code_for_step(seed, &params, step).unwrap().as_str())
}

/// A person who enrolled: email, authenticator seed, backup codes.
struct Person {
    user: UserId,
    email: String,
    seed: TotpSeed,
}

async fn enroll(relay: &EchoRelay, clock: &ManualClock, n: usize) -> Person {
    let email = format!("person{n}@example.com");
    let user = relay
        .accounts()
        .register(&email, SecretString::from(PASSWORD), Some(ip()))
        .await
        .unwrap();
    let PasswordStep::EnrollmentRequired(ch) = relay
        .accounts()
        .login_password(&email, SecretString::from(PASSWORD), ip(), None)
        .await
        .unwrap()
    else {
        panic!("a new account enrolls first");
    };
    let offer = relay
        .accounts()
        .begin_enrollment(ch.token.expose_secret(), ip())
        .await
        .unwrap();
    let seed = TotpSeed::from_base32(offer.secret_base32.expose_secret()).unwrap();
    relay
        .accounts()
        .confirm_enrollment(
            ch.token.expose_secret(),
            &code(relay, clock, &seed),
            ip(),
            false,
        )
        .await
        .unwrap();
    Person { user, email, seed }
}

async fn totp_login(relay: &EchoRelay, clock: &ManualClock, p: &Person) {
    // A step after the last accepted code: never a replay.
    clock.advance(Duration::seconds(30));
    let PasswordStep::SecondFactorRequired(ch) = relay
        .accounts()
        .login_password(&p.email, SecretString::from(PASSWORD), ip(), None)
        .await
        .unwrap()
    else {
        panic!("an enrolled account is asked for its second factor");
    };
    relay
        .accounts()
        .login_second_factor(
            ch.token.expose_secret(),
            SecondFactor::Totp(code(relay, clock, &p.seed)),
            ip(),
            false,
        )
        .await
        .expect("password + TOTP sign in");
}

/// What the drill checks after the restore.
struct Filled {
    people: Vec<Person>,
    keys: Vec<String>,
    targets: Vec<(ProjectId, TargetId, String)>,
}

/// 3 accounts with TOTP, 3 projects owned by them (a line, an endpoint
/// and two targets with sealed secrets each), 9 keys (one rotated per
/// project), and over 1,000 audit events.
async fn fill(relay: &EchoRelay, clock: &ManualClock) -> Filled {
    let mut f = Filled {
        people: Vec::new(),
        keys: Vec::new(),
        targets: Vec::new(),
    };
    for n in 0..3 {
        f.people.push(enroll(relay, clock, n).await);
    }
    for n in 0..3 {
        let owner = f.people[n].user;
        let slug = format!("drill-{n}");
        relay
            .config()
            .create_project(owner, Some(ip()), &slug, "Drill")
            .await
            .unwrap();
        let caller = Caller::dangerous_user_stepped_up(owner, Some(ip()));
        let w = relay
            .voter()
            .authorize::<ConfigWrite>(&caller, &slug)
            .await
            .unwrap();
        let members = relay
            .voter()
            .authorize::<Members>(&caller, &slug)
            .await
            .unwrap();
        relay
            .config()
            .set_member(&members, f.people[(n + 1) % 3].user, Some(Role::Editor))
            .await
            .unwrap();
        let line = relay.config().create_line(&w, "orders").await.unwrap();
        relay
            .config()
            .create_endpoint(&w, line.id, "in")
            .await
            .unwrap();
        for t in 0..2 {
            let created = relay
                .config()
                .create_target(
                    &w,
                    line.id,
                    NewTarget {
                        name: format!("out-{t}"),
                        url: format!("https://hooks.example.com/{n}/{t}"),
                        auth: AuthInput::Bearer(SecretString::from(format!("token-{n}-{t}"))),
                        signing_secret: None,
                    },
                )
                .await
                .unwrap();
            f.targets.push((
                w.project_id(),
                created.view.id,
                created.signing_secret.expose_secret().to_owned(),
            ));
        }
        let k = relay
            .voter()
            .authorize::<Keys>(&caller, &slug)
            .await
            .unwrap();
        let mut first = None;
        for _ in 0..2 {
            let m = relay
                .keys()
                .mint(
                    &k,
                    MintRequest {
                        environment: Environment::Live,
                        role: Role::Editor,
                        label: "drill".into(),
                    },
                )
                .await
                .unwrap();
            first.get_or_insert(m.view.id);
            f.keys.push(m.plaintext.expose_secret().to_owned());
        }
        let rotated = relay
            .keys()
            .rotate(&k, first.unwrap(), RotateOptions::default())
            .await
            .unwrap();
        f.keys.push(rotated.plaintext.expose_secret().to_owned());
        for i in 0..340 {
            relay
                .config()
                .rename_line(&w, line.id, &format!("orders-{i}"))
                .await
                .unwrap();
        }
    }
    f
}

/// The target of the drill: the local S3 server when there is one
/// (`ECHORELAY_S3_URL`; required in CI), else memory.
async fn drill_target() -> Arc<dyn BackupTarget> {
    #[cfg(feature = "s3")]
    if let Some(s3) = echorelay::s3::test_s3().await {
        return Arc::new(s3.fresh_target().unwrap());
    }
    Arc::new(MemBackupTarget::new())
}

#[tokio::test]
async fn the_in_memory_drill() {
    let keyring = Keyring::new(SecretKey::generate());
    let clock = ManualClock::at_unix(1_767_225_600);
    let before = relay(&keyring, &clock);
    let filled = fill(&before, &clock).await;
    let (recipients, identities) = keypair();
    let target = drill_target().await;
    let backups = before.backups(target.clone());
    let manifest = before.back_up(&backups, &recipients, &[]).await.unwrap();
    assert_eq!(manifest.store, "memory");
    assert_eq!(manifest.objects.len(), 1);
    assert_eq!(
        manifest.audit_heads.len(),
        4,
        "the global chain and 3 projects"
    );
    let mut expected = Vec::new();
    let expected_counts = snapshot::export(
        before.store().as_ref(),
        "memory",
        clock.now(),
        &mut expected,
    )
    .await
    .unwrap();
    assert!(expected_counts.events >= 1_000, "{expected_counts:?}");

    // The store is lost. A new relay with the same SECRET_KEY keyring,
    // reading the same target, restores the newest backup.
    drop(before);
    let after = relay(&keyring, &clock);
    let backups = after.backups(target);
    let newest = backups.newest().await.unwrap().unwrap();
    assert_eq!(newest, manifest.id);
    backups
        .verify(&newest, identities.clone(), &|_| {})
        .await
        .unwrap();
    let counts = after
        .restore_snapshot(&backups, &newest, identities.clone())
        .await
        .unwrap();
    assert_eq!(counts, expected_counts);

    for key in &filled.keys {
        after
            .keys()
            .verify(key)
            .await
            .expect("a restored key verifies");
    }
    for (project, target, signing) in &filled.targets {
        let grant = after
            .voter()
            .dangerous_delivery_grant(*project)
            .await
            .unwrap();
        let secrets = after
            .config()
            .delivery_secrets(&grant, *target)
            .await
            .unwrap();
        assert!(
            matches!(&secrets.auth, AuthInput::Bearer(t) if t.expose_secret().starts_with("token-"))
        );
        assert_eq!(secrets.signing_secret.expose_secret(), signing);
    }
    for p in &filled.people {
        totp_login(&after, &clock, p).await;
    }
    // Every chain verifies (keyed: the relay tags under SECRET_KEY) and
    // still holds the heads the manifest recorded.
    let mut chains = vec![None];
    chains.extend(
        after
            .store()
            .list_projects()
            .await
            .unwrap()
            .into_iter()
            .map(|p| Some(p.id)),
    );
    let keys = echorelay::core::audit::AuditKeys::from_keyring(&keyring);
    for chain in chains {
        let log = echorelay::core::audit::AuditService::keyed(after.store().clone(), keys.clone());
        log.verify_chain(chain, None)
            .await
            .unwrap_or_else(|e| panic!("chain {chain:?}: {e:?}"));
    }
    assert!(
        compare_heads(after.store().as_ref(), &manifest.audit_heads)
            .await
            .unwrap()
            .is_empty()
    );

    // A second restore into the store now in use is refused, and a relay
    // with another keyring cannot even authenticate the manifest.
    assert!(matches!(
        after
            .restore_snapshot(&backups, &newest, identities.clone())
            .await,
        Err(BackupError::NotEmpty(_))
    ));
    let stranger = relay(&Keyring::new(SecretKey::generate()), &clock);
    let theirs = stranger.backups(backups.target().clone());
    assert!(matches!(
        stranger
            .restore_snapshot(&theirs, &newest, identities)
            .await,
        Err(BackupError::Corrupt { .. })
    ));
}

/// A small store's snapshot, its lines, and the heads to anchor it with.
async fn small() -> (Vec<Vec<u8>>, Vec<(Option<ProjectId>, ChainHead)>) {
    let keyring = Keyring::new(SecretKey::generate());
    let clock = ManualClock::at_unix(1_767_225_600);
    let r = relay(&keyring, &clock);
    let p = enroll(&r, &clock, 0).await;
    r.config()
        .create_project(p.user, Some(ip()), "small", "Small")
        .await
        .unwrap();
    let caller = Caller::dangerous_user_stepped_up(p.user, Some(ip()));
    let k = r.voter().authorize::<Keys>(&caller, "small").await.unwrap();
    let w = r
        .voter()
        .authorize::<ConfigWrite>(&caller, "small")
        .await
        .unwrap();
    let line = r.config().create_line(&w, "l").await.unwrap();
    for i in 0..4 {
        r.config()
            .rename_line(&w, line.id, &format!("l{i}"))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        r.keys()
            .mint(
                &k,
                MintRequest {
                    environment: Environment::Test,
                    role: Role::Viewer,
                    label: String::new(),
                },
            )
            .await
            .unwrap();
    }
    let mut bytes = Vec::new();
    snapshot::export(r.store().as_ref(), "memory", clock.now(), &mut bytes)
        .await
        .unwrap();
    let heads = echorelay::core::backup::service::audit_heads(r.store().as_ref())
        .await
        .unwrap()
        .into_iter()
        .map(|h| {
            let mut hash = [0u8; 32];
            for (i, b) in hash.iter_mut().enumerate() {
                *b = u8::from_str_radix(&h.hash[2 * i..2 * i + 2], 16).unwrap();
            }
            (
                h.chain.map(|c| c.parse().unwrap()),
                ChainHead {
                    seq: h.seq,
                    hash: echorelay::core::audit::Hash32(hash),
                },
            )
        })
        .collect();
    let lines = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    (lines, heads)
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// `lines` with the end record recounted (so a check other than the count
/// must catch the change).
fn recounted(mut lines: Vec<Vec<u8>>) -> Vec<u8> {
    let n = lines.len() - 2;
    *lines.last_mut().unwrap() = format!("{{\"type\":\"end\",\"records\":{n}}}").into_bytes();
    join(&lines)
}

fn index_of(lines: &[Vec<u8>], kind: &str) -> Vec<usize> {
    let tag = format!("{{\"type\":\"{kind}\"");
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with(tag.as_bytes()))
        .map(|(i, _)| i)
        .collect()
}

fn edit(line: &[u8], f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(line).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn snapshots_round_trip_and_every_rule_refuses_its_break() {
    let (lines, heads) = small().await;
    let good = join(&lines);
    let data = snapshot::parse(&good, &heads).expect("a fresh snapshot parses");
    // The stored form round-trips: written again, it reads back equal.
    let again = snapshot::to_bytes(&data, "memory", chrono::Utc::now());
    assert_eq!(snapshot::parse(&again, &heads).unwrap(), data);

    let events = index_of(&lines, "event");
    let project = index_of(&lines, "project")[0];
    let account = index_of(&lines, "account")[0];
    let key = index_of(&lines, "key")[0];
    assert!(events.len() >= 6);

    let malformed =
        |r: Result<SnapshotData, SnapshotError>| matches!(r, Err(SnapshotError::Malformed { .. }));
    let inconsistent =
        |r: Result<SnapshotData, SnapshotError>| matches!(r, Err(SnapshotError::Inconsistent(_)));
    let chain =
        |r: Result<SnapshotData, SnapshotError>| matches!(r, Err(SnapshotError::Chain { .. }));

    // Framing: empty, cut short, a bad count, an empty line, a record
    // after the end, a record before the header, a second header.
    assert!(malformed(snapshot::parse(b"", &[])));
    assert!(malformed(snapshot::parse(
        &join(&lines[..lines.len() - 1]),
        &[]
    )));
    let mut bad_count = lines.clone();
    *bad_count.last_mut().unwrap() = b"{\"type\":\"end\",\"records\":1}".to_vec();
    assert!(malformed(snapshot::parse(&join(&bad_count), &[])));
    let mut gap = good.clone();
    gap.splice(lines[0].len() + 1..lines[0].len() + 1, *b"\n");
    assert!(malformed(snapshot::parse(&gap, &[])));
    let mut trailing = lines.clone();
    trailing.push(lines[account].clone());
    assert!(malformed(snapshot::parse(&join(&trailing), &[])));
    assert!(malformed(snapshot::parse(&join(&lines[1..]), &[])));
    let mut two_headers = lines.clone();
    two_headers.insert(1, lines[0].clone());
    assert!(malformed(snapshot::parse(&recounted(two_headers), &[])));
    let mut not_json = lines.clone();
    not_json[account] = b"{\"type\":\"account\",".to_vec();
    assert!(malformed(snapshot::parse(&join(&not_json), &[])));
    // Formats: a newer one is named; something else is malformed.
    let mut newer = lines.clone();
    newer[0] = edit(&lines[0], |v| v["format"] = "echorelay-snapshot/2".into());
    assert_eq!(
        snapshot::parse(&join(&newer), &[]),
        Err(SnapshotError::UnsupportedFormat(
            "echorelay-snapshot/2".into()
        ))
    );
    let mut other = lines.clone();
    other[0] = edit(&lines[0], |v| v["format"] = "tar".into());
    assert!(malformed(snapshot::parse(&join(&other), &[])));

    // Consistency, with the count kept right.
    for (what, i) in [("account", account), ("key", key), ("project", project)] {
        let mut dup = lines.clone();
        dup.insert(i, lines[i].clone());
        assert!(
            inconsistent(snapshot::parse(&recounted(dup), &[])),
            "repeated {what}"
        );
    }
    for (what, kind) in [("totp", "totp"), ("backup codes", "backup_codes")] {
        let i = index_of(&lines, kind)[0];
        let mut dup = lines.clone();
        dup.insert(i, lines[i].clone());
        assert!(
            inconsistent(snapshot::parse(&recounted(dup), &[])),
            "repeated {what}"
        );
    }
    let mut no_account = lines.clone();
    no_account.remove(account);
    assert!(inconsistent(snapshot::parse(&recounted(no_account), &[])));
    let mut no_project = lines.clone();
    no_project.remove(project);
    assert!(inconsistent(snapshot::parse(&recounted(no_project), &[])));
    let mut stray_line = lines.clone();
    stray_line[project] = edit(&lines[project], |v| {
        v["tree"]["lines"][0]["project"] = "prj_00000000000000000000000000000000".into();
    });
    assert!(inconsistent(snapshot::parse(&join(&stray_line), &[])));
    let mut slug_twice = lines.clone();
    slug_twice.insert(
        project,
        edit(&lines[project], |v| {
            v["tree"]["project"]["id"] = "prj_00000000000000000000000000000001".into();
            v["tree"]["lines"] = serde_json::json!([]);
        }),
    );
    assert!(inconsistent(snapshot::parse(&recounted(slug_twice), &[])));

    // Chains: an event removed, two swapped, one edited; an anchor the
    // chain does not reach, an anchored chain that is missing; a sealed
    // head that is not the chain's last event.
    let project_events: Vec<usize> = events
        .iter()
        .copied()
        .filter(|&i| !lines[i].windows(16).any(|w| w == b"\"project\":null,"))
        .collect();
    assert!(project_events.len() >= 4);
    let mut removed = lines.clone();
    removed.remove(project_events[1]);
    assert!(chain(snapshot::parse(&recounted(removed), &[])));
    let mut swapped = lines.clone();
    swapped.swap(project_events[1], project_events[2]);
    assert!(chain(snapshot::parse(&join(&swapped), &[])));
    let mut edited = lines.clone();
    edited[project_events[2]] = edit(&lines[project_events[2]], |v| {
        v["event"]["at"] = "2030-01-01T00:00:00Z".into();
    });
    assert!(chain(snapshot::parse(&join(&edited), &[])));
    let beyond: Vec<_> = heads
        .iter()
        .map(|(c, h)| {
            (
                *c,
                ChainHead {
                    seq: h.seq + 1,
                    hash: h.hash,
                },
            )
        })
        .collect();
    assert!(chain(snapshot::parse(&good, &beyond)));
    let mut cut = lines.clone();
    let last = *project_events.last().unwrap();
    cut.remove(last);
    // Cut the sealed head too, so only the anchor tells.
    let sealed = index_of(&cut, "sealed_head");
    for i in sealed.into_iter().rev() {
        cut.remove(i);
    }
    assert!(snapshot::parse(&recounted(cut.clone()), &[]).is_ok());
    assert!(chain(snapshot::parse(&recounted(cut), &heads)));
    let missing = vec![(
        Some(ProjectId::random()),
        ChainHead {
            seq: 1,
            hash: echorelay::core::audit::Hash32([7; 32]),
        },
    )];
    assert!(chain(snapshot::parse(&good, &missing)));
    let s = index_of(&lines, "sealed_head")[0];
    let mut moved_head = lines.clone();
    moved_head[s] = edit(&lines[s], |v| {
        v["seq"] = (v["seq"].as_u64().unwrap() - 1).into();
    });
    assert!(chain(snapshot::parse(&join(&moved_head), &[])));
    let mut twice = lines.clone();
    twice.insert(s, lines[s].clone());
    assert!(inconsistent(snapshot::parse(&recounted(twice), &[])));

    // Errors never carry a value of the snapshot.
    let email = b"person0@example.com";
    assert!(good.windows(email.len()).any(|w| w == email));
    let mut leaky = lines.clone();
    leaky[account] = edit(&lines[account], |v| {
        v["account"]["epoch"] = "person0@example.com".into()
    });
    let e = snapshot::parse(&join(&leaky), &[]).unwrap_err().to_string();
    assert!(!e.contains("person0"), "{e}");
}

/// The `snapshot_parse` fuzz target's seeds (fuzz/corpus/snapshot_parse,
/// written by this test with `ECHORELAY_WRITE_SEEDS=1`): `valid-*` reach
/// the accept path, every other one is refused.
#[tokio::test]
async fn fuzz_seeds_reach_the_accept_path_and_the_refusals() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/snapshot_parse");
    if std::env::var("ECHORELAY_WRITE_SEEDS").is_ok_and(|v| v == "1") {
        let (lines, _) = small().await;
        std::fs::create_dir_all(&dir).unwrap();
        let mut seeds = vec![("valid-small", join(&lines))];
        let empty = snapshot::to_bytes(&SnapshotData::default(), "memory", chrono::Utc::now());
        seeds.push(("valid-empty", empty));
        seeds.push(("bad-cut-short", join(&lines[..lines.len() - 1])));
        let mut dup = lines.clone();
        dup.insert(1, lines[1].clone());
        seeds.push(("bad-repeated-record", recounted(dup)));
        let ev = index_of(&lines, "event");
        let mut swapped = lines.clone();
        swapped.swap(ev[0], ev[1]);
        seeds.push(("bad-chain", join(&swapped)));
        let mut newer = lines.clone();
        newer[0] = edit(&lines[0], |v| v["format"] = "echorelay-snapshot/2".into());
        seeds.push(("bad-newer-format", join(&newer)));
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
    let (mut valid, mut refused) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(name) = name.strip_prefix("seed-") else {
            continue;
        };
        let got = snapshot::parse(&std::fs::read(&p).unwrap(), &[]);
        if name.starts_with("valid-") {
            got.unwrap_or_else(|e| panic!("{name}: {e}"));
            valid += 1;
        } else {
            assert!(got.is_err(), "{name} parsed");
            refused += 1;
        }
    }
    assert_eq!((valid, refused), (2, 4));
}

/// `data` in a canonical order (backends list projects in their own
/// order): what two backends holding the same records both give.
fn canonical(mut data: SnapshotData) -> SnapshotData {
    data.accounts.sort_by_key(|a| a.id);
    data.totp.sort_by_key(|t| t.user);
    data.backup_codes.sort_by_key(|(u, _)| *u);
    data.devices.sort_by_key(|d| d.id);
    data.projects.sort_by_key(|t| t.project.id);
    for t in &mut data.projects {
        t.lines.sort_by_key(|l| l.id);
        t.endpoints.sort_by_key(|e| e.id);
        t.targets.sort_by_key(|x| x.id);
    }
    data.members.sort();
    data.keys.sort_by_key(|k| k.id);
    data.events.sort_by_key(|e| (e.project, e.seq));
    data.sealed_heads.sort_by_key(|(c, _)| *c);
    data
}

/// A snapshot is backend-neutral: one taken from Postgres restores into
/// the in-memory store, which then holds the same records, and its keys,
/// secrets and TOTP logins work there.
#[cfg(feature = "pg")]
#[tokio::test]
async fn a_postgres_snapshot_restores_into_memory() {
    let Some(db) = echorelay::pg::test_database().await else {
        return;
    };
    let keyring = Keyring::new(SecretKey::generate());
    let clock = ManualClock::at_unix(1_767_225_600);
    let pg = EchoRelay::builder()
        .store(db.fresh_store().await.unwrap())
        .keyring(keyring.clone())
        .clock(Arc::new(clock.clone()))
        .account_policy(echorelay_testkit::test_account_policy())
        .build()
        .unwrap();
    let filled = fill(&pg, &clock).await;
    let (recipients, identities) = keypair();
    let backups = pg.backups(Arc::new(MemBackupTarget::new()));
    let m = pg.back_up(&backups, &recipients, &[]).await.unwrap();
    assert_eq!(m.store, "postgres");

    let mem = relay(&keyring, &clock);
    let mem_backups = mem.backups(backups.target().clone());
    mem.restore_snapshot(&mem_backups, &m.id, identities)
        .await
        .unwrap();
    let read = |r: &EchoRelay| {
        let store = r.store().clone();
        let at = clock.now();
        async move {
            let mut bytes = Vec::new();
            snapshot::export(store.as_ref(), "any", at, &mut bytes)
                .await
                .unwrap();
            canonical(snapshot::parse(&bytes, &[]).unwrap())
        }
    };
    assert_eq!(read(&pg).await, read(&mem).await);
    for key in &filled.keys {
        mem.keys().verify(key).await.unwrap();
    }
    for (project, target, signing) in &filled.targets {
        let grant = mem
            .voter()
            .dangerous_delivery_grant(*project)
            .await
            .unwrap();
        let secrets = mem
            .config()
            .delivery_secrets(&grant, *target)
            .await
            .unwrap();
        assert_eq!(secrets.signing_secret.expose_secret(), signing);
    }
    for p in &filled.people {
        totp_login(&mem, &clock, p).await;
    }
}
