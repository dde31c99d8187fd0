//! Account security: passwords, TOTP, backup codes, trusted devices,
//! sessions and the login flow (invariants S6–S9).

pub mod password;
pub mod totp;
