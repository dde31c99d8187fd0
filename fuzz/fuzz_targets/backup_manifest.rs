//! Fuzzes the backup manifest reader (`backup::manifest::open`, the
//! decrypted `manifest.age` envelope, docs/FORMATS.md Part 5): it must
//! never panic; anything it accepts is authentic under the fuzz keyring,
//! passes the shape rules, and seals again to an envelope that opens to
//! the same manifest.
#![no_main]

use std::sync::OnceLock;

use echorelay_core::backup::ObjectPath;
use echorelay_core::backup::manifest::{self, MAX_OBJECTS};
use echorelay_core::vault::{Keyring, SecretKey};
use libfuzzer_sys::fuzz_target;

fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| Keyring::new(SecretKey::from_bytes([0x42; 32])))
}

fuzz_target!(|data: &[u8]| {
    let path = ObjectPath::new("backups/fuzz/manifest.age").expect("a valid path");
    if let Ok(m) = manifest::open(data, keyring(), &path) {
        assert!(manifest::is_backup_id(&m.id));
        assert!(!m.objects.is_empty() && m.objects.len() <= MAX_OBJECTS);
        for o in &m.objects {
            assert!(o.path.starts_with(&format!("backups/{}/", m.id)));
            assert!(ObjectPath::new(&o.path).is_ok());
        }
        let again = manifest::seal(&m, keyring()).expect("an accepted manifest seals");
        assert_eq!(manifest::open(&again, keyring(), &path).ok(), Some(m));
    }
});
