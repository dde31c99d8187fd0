//! The manifest of a backup: what it holds, each object's size and
//! SHA-256, the recipients' fingerprints and the audit chains' heads,
//! authenticated with a key derived from `SECRET_KEY` (docs/FORMATS.md,
//! Part 5).
//!
//! Why a MAC as well as age: anyone with a recipient's *public* key can
//! make a valid age file, so an attacker who can write to the bucket
//! could encrypt a manifest of their own. The MAC, under a key only the
//! deployment holds (HKDF-SHA256 of each `SECRET_KEY`, info
//! `echorelay.backup.manifest.key.v1`), makes a forged or edited manifest
//! fail before anything it names is read.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::target::{BackupError, ObjectPath};
use crate::vault::{Keyring, VaultKeyId};

/// The manifest format this build writes and reads.
pub const FORMAT: &str = "echorelay.backup.v1";
/// The envelope format (what `manifest.age` decrypts to).
pub const ENVELOPE_FORMAT: &str = "echorelay.backup-envelope.v1";
/// The largest manifest read, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024 * 1024;
/// The most objects one backup holds.
pub const MAX_OBJECTS: usize = 64;

const KEY_INFO: &[u8] = b"echorelay.backup.manifest.key.v1";
const MAC_DOMAIN: &[u8] = b"echorelay.backup.manifest.v1\0";

/// One encrypted object of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectEntry {
    /// What it holds: `snapshot` (the store through its ports, JSON
    /// lines) or `pg_dump` (a `pg_dump --format=custom`).
    pub name: String,
    /// Where it is, relative to the target.
    pub path: String,
    /// Bytes stored (the age file).
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes stored.
    pub sha256: String,
    /// Bytes once decrypted.
    pub plaintext_size: u64,
}

/// An audit chain's head when the backup was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadEntry {
    /// The project (`prj_…`), or `null` for the global chain.
    pub chain: Option<String>,
    /// The head's sequence number.
    pub seq: u64,
    /// Lowercase hex of the head event's hash.
    pub hash: String,
}

/// A backup's manifest (docs/FORMATS.md, Part 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// The backup's id: `YYYYMMDDTHHMMSSZ-` and 8 hex digits.
    pub id: String,
    /// When the backup started.
    pub created_at: DateTime<Utc>,
    /// The echorelay version that made it.
    pub echorelay_version: String,
    /// The store it was made from (`memory`, `postgres`).
    pub store: String,
    /// The store's schema version (Postgres: the last migration applied;
    /// memory: 0).
    pub schema_version: i64,
    /// Fingerprints of the recipients it is encrypted to (lowercase hex
    /// SHA-256 of each `age1…`).
    pub recipients: Vec<String>,
    /// The objects, in the order they were written.
    pub objects: Vec<ObjectEntry>,
    /// Every audit chain's head at the start of the backup.
    pub audit_heads: Vec<HeadEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MacField {
    key_id: String,
    tag: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    /// The manifest's JSON text, exactly the bytes the MAC covers.
    manifest: String,
    mac: MacField,
}

/// The probe: only the format field, so a newer envelope is recognised
/// even if the rest of it changed.
#[derive(Deserialize)]
struct FormatProbe {
    format: String,
}

fn mac(key: &[u8; 32], manifest: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    m.update(MAC_DOMAIN);
    m.update(manifest);
    m.finalize().into_bytes().into()
}

fn keys(keyring: &Keyring) -> Vec<(VaultKeyId, Zeroizing<[u8; 32]>)> {
    keyring.subkeys(KEY_INFO)
}

/// The envelope text of `manifest`, tagged with the keyring's current
/// key: what `manifest.age` encrypts.
pub fn seal(manifest: &Manifest, keyring: &Keyring) -> Result<Vec<u8>, BackupError> {
    let text = serde_json::to_string(manifest)
        .map_err(|e| BackupError::Encryption(format!("manifest: {e}")))?;
    let (key_id, tag) = match keys(keyring).first() {
        Some((id, key)) => (*id, mac(key, text.as_bytes())),
        None => return Err(BackupError::Encryption("no SECRET_KEY".into())),
    };
    let env = Envelope {
        format: ENVELOPE_FORMAT.to_owned(),
        manifest: text,
        mac: MacField {
            key_id: key_id.to_string(),
            tag: hex::encode(tag),
        },
    };
    serde_json::to_vec(&env).map_err(|e| BackupError::Encryption(format!("manifest: {e}")))
}

/// Whether `found` names a later version of the format family `family`
/// (`echorelay.backup.v` + a number above 1).
fn is_newer(found: &str, family: &str) -> bool {
    found
        .strip_prefix(family)
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|v| v > 1)
}

/// Parses and authenticates decrypted envelope bytes; `path` names the
/// manifest in errors. Checks, in order: the envelope's format (a newer
/// one is [`BackupError::UnsupportedFormat`]), the MAC under any key of
/// the keyring, then the manifest's own format and shape.
pub fn open(bytes: &[u8], keyring: &Keyring, path: &ObjectPath) -> Result<Manifest, BackupError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(BackupError::corrupt(
            path,
            "is larger than a manifest may be",
        ));
    }
    let probe: FormatProbe = serde_json::from_slice(bytes)
        .map_err(|_| BackupError::corrupt(path, "is not a manifest envelope"))?;
    if probe.format != ENVELOPE_FORMAT {
        if is_newer(&probe.format, "echorelay.backup-envelope.v") {
            return Err(BackupError::UnsupportedFormat {
                found: probe.format,
                supported: ENVELOPE_FORMAT,
            });
        }
        return Err(BackupError::corrupt(path, "is not a manifest envelope"));
    }
    let env: Envelope = serde_json::from_slice(bytes)
        .map_err(|_| BackupError::corrupt(path, "is not a manifest envelope"))?;
    let tag = hex::decode(&env.mac.tag)
        .ok()
        .filter(|t| t.len() == 32)
        .ok_or_else(|| BackupError::corrupt(path, "has a malformed MAC"))?;
    let authentic = keys(keyring)
        .iter()
        .filter(|(id, _)| id.to_string() == env.mac.key_id)
        .any(|(_, key)| bool::from(mac(key, env.manifest.as_bytes()).ct_eq(&tag[..])));
    if !authentic {
        return Err(BackupError::corrupt(
            path,
            "does not authenticate under this SECRET_KEY keyring (forged, edited, or made under a key not in SECRET_KEY/SECRET_KEY_PREVIOUS)",
        ));
    }
    let probe: FormatProbe = serde_json::from_str(&env.manifest)
        .map_err(|_| BackupError::corrupt(path, "holds no valid manifest"))?;
    if probe.format != FORMAT {
        if is_newer(&probe.format, "echorelay.backup.v") {
            return Err(BackupError::UnsupportedFormat {
                found: probe.format,
                supported: FORMAT,
            });
        }
        return Err(BackupError::corrupt(path, "holds no valid manifest"));
    }
    let m: Manifest = serde_json::from_str(&env.manifest)
        .map_err(|_| BackupError::corrupt(path, "holds no valid manifest"))?;
    check_shape(&m, path)?;
    Ok(m)
}

/// The rules a manifest's fields follow beyond their types.
fn check_shape(m: &Manifest, path: &ObjectPath) -> Result<(), BackupError> {
    if !is_backup_id(&m.id) {
        return Err(BackupError::corrupt(path, "has a malformed backup id"));
    }
    if m.objects.is_empty() || m.objects.len() > MAX_OBJECTS {
        return Err(BackupError::corrupt(path, "names no object or too many"));
    }
    let dir = format!("backups/{}/", m.id);
    for (i, o) in m.objects.iter().enumerate() {
        let ok_path = ObjectPath::new(&o.path).is_ok()
            && o.path.starts_with(&dir)
            && o.path != format!("{dir}manifest.age");
        let ok_hash = o.sha256.len() == 64
            && o.sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let unique = !m.objects[..i]
            .iter()
            .any(|p| p.path == o.path || p.name == o.name);
        if !(ok_path && ok_hash && unique && !o.name.is_empty()) {
            return Err(BackupError::corrupt(path, "names an object wrongly"));
        }
    }
    Ok(())
}

/// Whether `id` is a backup id: `YYYYMMDDTHHMMSSZ-` and 8 lowercase hex
/// digits.
pub fn is_backup_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 25
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// When the backup `id` started (its first 16 characters), if `id` is a
/// backup id: the inverse of [`backup_id`].
pub fn started_at(id: &str) -> Option<DateTime<Utc>> {
    if !is_backup_id(id) {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(id.get(..15)?, "%Y%m%dT%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

/// A backup id for a backup started at `at`, with `suffix` (random).
pub fn backup_id(at: DateTime<Utc>, suffix: u32) -> String {
    format!("{}-{suffix:08x}", at.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::SecretKey;

    fn hex_key() -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    fn manifest() -> Manifest {
        let at = DateTime::parse_from_rfc3339("2026-12-05T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = backup_id(at, 0xdead_beef);
        Manifest {
            format: FORMAT.into(),
            id: id.clone(),
            created_at: at,
            echorelay_version: "0.1.0".into(),
            store: "memory".into(),
            schema_version: 0,
            recipients: vec!["ab".repeat(32)],
            objects: vec![ObjectEntry {
                name: "snapshot".into(),
                path: format!("backups/{id}/snapshot.age"),
                size: 10,
                sha256: "0".repeat(64),
                plaintext_size: 3,
            }],
            audit_heads: vec![HeadEntry {
                chain: None,
                seq: 1,
                hash: "1".repeat(64),
            }],
        }
    }

    fn path() -> ObjectPath {
        ObjectPath::new("backups/x/manifest.age").unwrap()
    }

    #[test]
    fn a_sealed_manifest_opens_under_the_same_keyring_only() {
        let old = hex_key();
        let ring = Keyring::parse(&old, &[]).unwrap();
        let m = manifest();
        let sealed = seal(&m, &ring).unwrap();
        assert_eq!(open(&sealed, &ring, &path()).unwrap(), m);
        let other = Keyring::new(SecretKey::generate());
        assert!(matches!(
            open(&sealed, &other, &path()),
            Err(BackupError::Corrupt { .. })
        ));
        // A rotated keyring still opens it while the old key is previous.
        let rotated = Keyring::parse(&hex_key(), &[&old]).unwrap();
        assert_eq!(open(&sealed, &rotated, &path()).unwrap(), m);
    }

    #[test]
    fn an_edited_manifest_does_not_authenticate() {
        let ring = Keyring::new(SecretKey::generate());
        let sealed = String::from_utf8(seal(&manifest(), &ring).unwrap()).unwrap();
        let edited = sealed.replace("\\\"size\\\":10", "\\\"size\\\":11");
        assert_ne!(edited, sealed);
        assert!(matches!(
            open(edited.as_bytes(), &ring, &path()),
            Err(BackupError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_newer_format_is_refused_by_name() {
        let ring = Keyring::new(SecretKey::generate());
        let env = br#"{"format":"echorelay.backup-envelope.v2","anything":1}"#;
        assert!(matches!(
            open(env, &ring, &path()),
            Err(BackupError::UnsupportedFormat { .. })
        ));
        let mut m = manifest();
        m.format = "echorelay.backup.v7".into();
        let sealed = seal(&m, &ring).unwrap();
        assert!(matches!(
            open(&sealed, &ring, &path()),
            Err(BackupError::UnsupportedFormat { .. })
        ));
        m.format = "something.else".into();
        let sealed = seal(&m, &ring).unwrap();
        assert!(matches!(
            open(&sealed, &ring, &path()),
            Err(BackupError::Corrupt { .. })
        ));
    }

    #[test]
    fn sizes_are_bounded_exactly() {
        let ring = Keyring::parse(&hex_key(), &[]).unwrap();
        // 64 objects is the most; 65 is refused.
        let mut m = manifest();
        let one = m.objects[0].clone();
        m.objects = (0..MAX_OBJECTS)
            .map(|i| ObjectEntry {
                name: format!("o{i}"),
                path: format!("backups/{}/o{i}.age", m.id),
                ..one.clone()
            })
            .collect();
        assert_eq!(open(&seal(&m, &ring).unwrap(), &ring, &path()).unwrap(), m);
        m.objects.push(ObjectEntry {
            name: "extra".into(),
            path: format!("backups/{}/extra.age", m.id),
            ..one
        });
        assert!(matches!(
            open(&seal(&m, &ring).unwrap(), &ring, &path()),
            Err(BackupError::Corrupt { .. })
        ));

        // A big manifest (30,000 audit heads, ~3 MB) opens; an envelope of
        // exactly MAX_MANIFEST_BYTES opens (JSON allows trailing blanks);
        // one byte more is refused before it is parsed.
        let mut m = manifest();
        m.audit_heads = (0..30_000)
            .map(|i| HeadEntry {
                chain: Some(format!("prj_{i:032x}")),
                seq: i,
                hash: "2".repeat(64),
            })
            .collect();
        let sealed = seal(&m, &ring).unwrap();
        assert!(sealed.len() > 2_000_000);
        assert_eq!(open(&sealed, &ring, &path()).unwrap(), m);
        let mut padded = seal(&manifest(), &ring).unwrap();
        padded.resize(MAX_MANIFEST_BYTES, b' ');
        assert!(open(&padded, &ring, &path()).is_ok());
        padded.push(b' ');
        let Err(BackupError::Corrupt { problem, .. }) = open(&padded, &ring, &path()) else {
            panic!("an envelope over the limit opened")
        };
        assert!(problem.contains("larger"), "{problem}");
    }

    #[test]
    fn only_a_later_version_number_is_newer() {
        let ring = Keyring::parse(&hex_key(), &[]).unwrap();
        for (format, newer) in [
            ("echorelay.backup.v2", true),
            ("echorelay.backup.v10", true),
            ("echorelay.backup.v01", false),
            ("echorelay.backup.v0", false),
            ("echorelay.backup.vx", false),
        ] {
            let mut m = manifest();
            m.format = format.into();
            let got = open(&seal(&m, &ring).unwrap(), &ring, &path());
            assert_eq!(
                matches!(got, Err(BackupError::UnsupportedFormat { .. })),
                newer,
                "{format}: {got:?}"
            );
            assert!(got.is_err());
        }
    }

    #[test]
    fn ids_have_one_shape() {
        let m = manifest();
        assert!(is_backup_id(&m.id), "{}", m.id);
        assert_eq!(m.id, "20261205T030000Z-deadbeef");
        assert_eq!(started_at(&m.id), Some(m.created_at));
        assert_eq!(started_at("20261205T030000Z"), None);
        for bad in [
            "",
            "20261205T030000Z-DEADBEEF",
            "20261205T030000Z_deadbeef",
            "20261205T030000-deadbeef0",
        ] {
            assert!(!is_backup_id(bad), "{bad}");
        }
    }
}
