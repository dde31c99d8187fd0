//! `/.well-known/security.txt` (RFC 9116), made from configuration and
//! checked when the server starts: a file that has expired, or that
//! claims to be valid for more than a year, is refused then, never served.

use chrono::{DateTime, Duration, SecondsFormat, Utc};

/// What the file says. `contact` and `expires` are required by RFC 9116;
/// every URI must be `https:` (`mailto:` and `tel:` are allowed for
/// contacts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityTxt {
    /// Where to report a vulnerability, in order of preference.
    pub contact: Vec<String>,
    /// When the file stops being valid (at most a year ahead).
    pub expires: DateTime<Utc>,
    /// Keys to encrypt reports with.
    pub encryption: Vec<String>,
    /// Where reporters are thanked.
    pub acknowledgments: Vec<String>,
    /// The disclosure policy.
    pub policy: Vec<String>,
    /// Languages reports may be written in (language tags, e.g. `en`).
    pub preferred_languages: Vec<String>,
    /// Where this file is published (its own URL).
    pub canonical: Vec<String>,
}

/// Why a configured security.txt is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityTxtError {
    /// No `Contact`.
    #[error("security.txt needs at least one Contact")]
    NoContact,
    /// `Expires` is not in the future.
    #[error("security.txt has expired (Expires is not in the future)")]
    Expired,
    /// `Expires` is more than a year away (RFC 9116 §2.5.5 recommends less).
    #[error("security.txt Expires is more than a year away")]
    TooFarAhead,
    /// A field value is not allowed.
    #[error("security.txt field {field} has an invalid value: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl SecurityTxt {
    /// Checks the file as of `now` (the server's start).
    ///
    /// # Errors
    /// [`SecurityTxtError`] naming the first problem.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), SecurityTxtError> {
        if self.contact.is_empty() {
            return Err(SecurityTxtError::NoContact);
        }
        if self.expires <= now {
            return Err(SecurityTxtError::Expired);
        }
        if self.expires > now + Duration::days(366) {
            return Err(SecurityTxtError::TooFarAhead);
        }
        for c in &self.contact {
            check_uri("Contact", c, &["https://", "mailto:", "tel:"])?;
        }
        for (field, values) in [
            ("Encryption", &self.encryption),
            ("Acknowledgments", &self.acknowledgments),
            ("Policy", &self.policy),
            ("Canonical", &self.canonical),
        ] {
            for v in values {
                check_uri(field, v, &["https://"])?;
            }
        }
        for tag in &self.preferred_languages {
            let ok = !tag.is_empty()
                && tag.len() <= 35
                && tag.split('-').all(|part| {
                    !part.is_empty()
                        && part.len() <= 8
                        && part.bytes().all(|b| b.is_ascii_alphanumeric())
                });
            if !ok {
                return Err(SecurityTxtError::Invalid {
                    field: "Preferred-Languages",
                    why: "not a language tag",
                });
            }
        }
        Ok(())
    }

    /// Reads a security.txt the operator wrote (`Field: value` lines, `#`
    /// comments, fields in any order; an unknown field is refused so a
    /// typo is not published silently). Check it with
    /// [`SecurityTxt::validate`].
    ///
    /// # Errors
    /// [`SecurityTxtError::Invalid`] for a line that is not a known field,
    /// a second `Expires`, or an `Expires` that is not an RFC 3339 time.
    pub fn parse(text: &str) -> Result<SecurityTxt, SecurityTxtError> {
        let mut contact = Vec::new();
        let mut expires = None;
        let (mut encryption, mut acknowledgments, mut policy, mut canonical) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut preferred_languages = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(SecurityTxtError::Invalid {
                    field: "line",
                    why: "not a `Field: value` line",
                });
            };
            let value = value.trim().to_owned();
            match name.trim().to_ascii_lowercase().as_str() {
                "contact" => contact.push(value),
                "expires" => {
                    let t = DateTime::parse_from_rfc3339(&value).map_err(|_| {
                        SecurityTxtError::Invalid {
                            field: "Expires",
                            why: "not an RFC 3339 date and time",
                        }
                    })?;
                    if expires.replace(t.with_timezone(&Utc)).is_some() {
                        return Err(SecurityTxtError::Invalid {
                            field: "Expires",
                            why: "given twice",
                        });
                    }
                }
                "encryption" => encryption.push(value),
                "acknowledgments" => acknowledgments.push(value),
                "policy" => policy.push(value),
                "canonical" => canonical.push(value),
                "preferred-languages" => {
                    preferred_languages.extend(value.split(',').map(|l| l.trim().to_owned()));
                }
                _ => {
                    return Err(SecurityTxtError::Invalid {
                        field: "line",
                        why: "not a field this server publishes",
                    });
                }
            }
        }
        Ok(SecurityTxt {
            contact,
            expires: expires.ok_or(SecurityTxtError::Invalid {
                field: "Expires",
                why: "missing",
            })?,
            encryption,
            acknowledgments,
            policy,
            preferred_languages,
            canonical,
        })
    }

    /// The file's text (`text/plain; charset=utf-8`), fields in the order
    /// of RFC 9116 §2.5, each line ending in CRLF.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: &str| {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        };
        for v in &self.contact {
            line("Contact", v);
        }
        line(
            "Expires",
            &self.expires.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
        for v in &self.encryption {
            line("Encryption", v);
        }
        for v in &self.acknowledgments {
            line("Acknowledgments", v);
        }
        if !self.preferred_languages.is_empty() {
            line("Preferred-Languages", &self.preferred_languages.join(", "));
        }
        for v in &self.canonical {
            line("Canonical", v);
        }
        for v in &self.policy {
            line("Policy", v);
        }
        out
    }
}

fn check_uri(field: &'static str, value: &str, schemes: &[&str]) -> Result<(), SecurityTxtError> {
    if !schemes.iter().any(|s| value.starts_with(s)) {
        return Err(SecurityTxtError::Invalid {
            field,
            why: "must be an https: URI (a contact may also be mailto: or tel:)",
        });
    }
    if value.len() <= value.find(':').map_or(0, |i| i + 1)
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(SecurityTxtError::Invalid {
            field,
            why: "must be a URI without spaces or control characters",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
    }

    fn file() -> SecurityTxt {
        SecurityTxt {
            contact: vec!["mailto:security@example.com".into()],
            expires: now() + Duration::days(180),
            encryption: vec![],
            acknowledgments: vec![],
            policy: vec![],
            preferred_languages: vec![],
            canonical: vec![],
        }
    }

    #[test]
    fn expires_must_be_ahead_and_within_a_year() {
        let mut f = file();
        f.expires = now();
        assert_eq!(f.validate(now()), Err(SecurityTxtError::Expired));
        f.expires = now() + Duration::seconds(1);
        assert_eq!(f.validate(now()), Ok(()));
        f.expires = now() + Duration::days(366);
        assert_eq!(f.validate(now()), Ok(()));
        f.expires = now() + Duration::days(366) + Duration::seconds(1);
        assert_eq!(f.validate(now()), Err(SecurityTxtError::TooFarAhead));
    }

    #[test]
    fn fields_are_checked() {
        let mut f = file();
        f.contact.clear();
        assert_eq!(f.validate(now()), Err(SecurityTxtError::NoContact));
        for bad in ["http://example.com", "mailto:", "https://a b", "ftp://x"] {
            let mut f = file();
            f.contact = vec![bad.into()];
            assert!(f.validate(now()).is_err(), "{bad}");
        }
        let mut f = file();
        f.policy = vec!["mailto:x@example.com".into()];
        assert!(f.validate(now()).is_err(), "policy must be https");
        let mut f = file();
        f.preferred_languages = vec!["en".into(), "de-CH".into()];
        assert_eq!(f.validate(now()), Ok(()));
        f.preferred_languages = vec!["en us".into()];
        assert!(f.validate(now()).is_err());
    }

    #[test]
    fn what_it_renders_parses_back() {
        let mut f = file();
        f.preferred_languages = vec!["en".into(), "fr".into()];
        f.policy = vec!["https://example.com/disclosure".into()];
        assert_eq!(SecurityTxt::parse(&f.render()), Ok(f));
        for bad in [
            "Contact: mailto:a@b.c\n",
            "Contact: mailto:a@b.c\nExpires: tomorrow\n",
            "Expires: 2027-01-01T00:00:00Z\nExpires: 2027-01-02T00:00:00Z\n",
            "Contact mailto:a@b.c\nExpires: 2027-01-01T00:00:00Z\n",
            "Contakt: mailto:a@b.c\nExpires: 2027-01-01T00:00:00Z\n",
        ] {
            assert!(SecurityTxt::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn renders_every_field_in_order() {
        let mut f = file();
        f.contact.push("https://example.com/report".into());
        f.encryption = vec!["https://example.com/pgp.asc".into()];
        f.acknowledgments = vec!["https://example.com/thanks".into()];
        f.preferred_languages = vec!["en".into(), "fr".into()];
        f.canonical = vec!["https://example.com/.well-known/security.txt".into()];
        f.policy = vec!["https://example.com/disclosure".into()];
        assert_eq!(
            f.render(),
            "Contact: mailto:security@example.com\r\n\
             Contact: https://example.com/report\r\n\
             Expires: 2027-05-30T00:00:00Z\r\n\
             Encryption: https://example.com/pgp.asc\r\n\
             Acknowledgments: https://example.com/thanks\r\n\
             Preferred-Languages: en, fr\r\n\
             Canonical: https://example.com/.well-known/security.txt\r\n\
             Policy: https://example.com/disclosure\r\n"
        );
    }
}
