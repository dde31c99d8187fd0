//! Fuzzes the ciphertext decoders: `Ciphertext::from_bytes` and
//! `Ciphertext::from_text` must never panic, anything they accept must
//! round-trip through the binary form, and opening it must never panic.
#![no_main]

use std::sync::OnceLock;

use echorelay_core::vault::{
    AesGcmVault, Ciphertext, Keyring, SecretContext, SecretKey, SecretVault,
};
use libfuzzer_sys::fuzz_target;

fn vault() -> &'static AesGcmVault {
    static VAULT: OnceLock<AesGcmVault> = OnceLock::new();
    VAULT.get_or_init(|| AesGcmVault::new(Keyring::new(SecretKey::from_bytes([0x42; 32]))))
}

const CTX: SecretContext<'static> = SecretContext {
    project: "fuzz-project",
    record: "fuzz-record",
    field: "fuzz-field",
};

fn check(ct: &Ciphertext) {
    let bytes = ct.to_bytes();
    let again = Ciphertext::from_bytes(&bytes).expect("to_bytes output must parse");
    assert_eq!(&again, ct, "binary round-trip changed the ciphertext");
    assert_eq!(again.to_bytes(), bytes);
    let text = ct.to_text();
    let from_text = Ciphertext::from_text(&text).expect("to_text output must parse");
    assert_eq!(&from_text, ct, "text round-trip changed the ciphertext");
    // Must not panic; random input essentially never authenticates.
    let _ = vault().open(ct, &CTX);
    let _ = vault().is_current(ct);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ct) = Ciphertext::from_bytes(data) {
        assert_eq!(
            ct.to_bytes(),
            data,
            "accepted binary input must round-trip exactly"
        );
        check(&ct);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ct) = Ciphertext::from_text(text) {
            assert_eq!(ct.to_text(), text, "accepted text input must be canonical");
            check(&ct);
        }
    }
});
