//! Bad input gets a typed error, never a panic: the config JSON parser on
//! arbitrary text and on every kind of damage to a real export, and the
//! SECRET_KEY parser on arbitrary text.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use echorelay::MemStore;
use echorelay::core::access::surface::{ConfigRead, ConfigWrite};
use echorelay::core::access::{Caller, Voter};
use echorelay::core::clock::SystemClock;
use echorelay::core::config::{AuthInput, ConfigService, NewTarget};
use echorelay::core::ids::UserId;
use echorelay::core::vault::{AesGcmVault, Keyring, SecretKey};
use proptest::prelude::*;
use secrecy::SecretString;

fn export() -> (ConfigService<MemStore, Arc<AesGcmVault>>, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemStore::new();
    let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
    let config = ConfigService::new(store.clone(), vault, Arc::new(SystemClock));
    let voter = Voter::new(store);
    let json = rt.block_on(async {
        let u = UserId::random();
        let me = Caller::user(u, None);
        config.create_project(u, None, "fuzzy", "F").await.unwrap();
        let w = voter.authorize::<ConfigWrite>(&me, "fuzzy").await.unwrap();
        let line = config.create_line(&w, "l").await.unwrap();
        config.create_endpoint(&w, line.id, "e").await.unwrap();
        let t = NewTarget {
            name: "t".into(),
            url: "https://example.com/h".into(),
            auth: AuthInput::Basic {
                username: "u".into(),
                password: SecretString::from("a long password"),
            },
            signing_secret: None,
        };
        config.create_target(&w, line.id, t).await.unwrap();
        let r = voter.authorize::<ConfigRead>(&me, "fuzzy").await.unwrap();
        config.export(&r).await.unwrap()
    });
    (config, json)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn config_import_never_panics_on_arbitrary_text(s in "\\PC{0,400}") {
        let (config, _) = export();
        prop_assert!(config.validate_import(&s).is_err());
    }

    #[test]
    fn config_import_never_panics_on_a_damaged_export(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
        let (config, json) = export();
        prop_assert!(config.validate_import(&json).is_ok());
        let mut bytes = json.into_bytes();
        let i = pos.index(bytes.len());
        if cut { bytes.truncate(i) } else { bytes[i] = byte }
        if let Ok(text) = String::from_utf8(bytes) {
            // Either still a valid export (the change hit whitespace or an
            // equivalent byte) or a typed error; never a panic.
            let _ = config.validate_import(&text);
        }
    }

    #[test]
    fn secret_key_parser_never_panics(s in "\\PC{0,120}") {
        let _ = SecretKey::parse(&s);
    }
}
