//! The `backup_manifest` fuzz target's seeds (fuzz/corpus/backup_manifest,
//! written by scripts/fuzz_seeds.py from the format in docs/FORMATS.md
//! Part 5, independently of this crate): the `valid-*` ones reach the
//! accept path under the fuzz keyring, every other one is refused with the
//! error its name implies. A drift between the format and the seeds fails
//! here, not silently in the fuzzer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use echorelay_core::backup::manifest;
use echorelay_core::backup::{BackupError, ObjectPath};
use echorelay_core::vault::{Keyring, SecretKey};

#[test]
fn seeds_reach_the_accept_path_and_each_refusal() {
    let ring = Keyring::new(SecretKey::from_bytes([0x42; 32]));
    let path = ObjectPath::new("backups/fuzz/manifest.age").unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/backup_manifest");
    let (mut accepted, mut refused) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(name) = name.strip_prefix("seed-") else {
            continue;
        };
        let got = manifest::open(&std::fs::read(&p).unwrap(), &ring, &path);
        if name.starts_with("valid-") {
            let m = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.id, "20261205T030000Z-deadbeef", "{name}");
            accepted += 1;
        } else if name.ends_with("-v2") || name.ends_with("-v9") {
            assert!(
                matches!(got, Err(BackupError::UnsupportedFormat { .. })),
                "{name}: {got:?}"
            );
            refused += 1;
        } else {
            assert!(
                matches!(got, Err(BackupError::Corrupt { .. })),
                "{name}: {got:?}"
            );
            refused += 1;
        }
    }
    assert_eq!((accepted, refused), (3, 12));
}
