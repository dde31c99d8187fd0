//! The pages' HTML (maud: every `(value)` is escaped; `PreEscaped` only
//! for the QR code's SVG, which core renders from the URI it made).

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// Where the stylesheet is served (the only style the CSP allows).
pub const STYLESHEET: &str = "/account/style.css";
/// The print button's script (the only script the CSP allows).
pub const PRINT_SCRIPT: &str = "/account/print.js";

/// What a form field shows and how a browser fills it.
pub struct Field<'a> {
    /// `name` and `id`.
    pub name: &'a str,
    /// The label text.
    pub label: &'a str,
    /// `type`.
    pub kind: &'a str,
    /// `autocomplete`.
    pub autocomplete: &'a str,
    /// The value to show again (never a password or a code).
    pub value: Option<&'a str>,
    /// A hint under the label.
    pub hint: Option<&'a str>,
    /// `inputmode`.
    pub inputmode: Option<&'a str>,
    /// `maxlength` (the server checks it too).
    pub maxlength: usize,
}

impl<'a> Field<'a> {
    /// A required field.
    pub fn new(
        name: &'a str,
        label: &'a str,
        kind: &'a str,
        autocomplete: &'a str,
        maxlength: usize,
    ) -> Self {
        Self {
            name,
            label,
            kind,
            autocomplete,
            value: None,
            hint: None,
            inputmode: None,
            maxlength,
        }
    }

    /// With a value shown again.
    pub fn value(mut self, v: Option<&'a str>) -> Self {
        self.value = v;
        self
    }

    /// With a hint.
    pub fn hint(mut self, h: &'a str) -> Self {
        self.hint = Some(h);
        self
    }

    /// With an `inputmode`.
    pub fn inputmode(mut self, m: &'a str) -> Self {
        self.inputmode = Some(m);
        self
    }
}

/// Errors of one form: by field name, in the order found; `None` for one
/// about the whole form.
#[derive(Debug, Default, Clone)]
pub struct Errors(pub Vec<(Option<&'static str>, String)>);

impl Errors {
    /// No errors.
    pub fn none() -> Self {
        Self::default()
    }

    /// One error about field `name`.
    pub fn field(name: &'static str, message: impl Into<String>) -> Self {
        Self(vec![(Some(name), message.into())])
    }

    /// One error about the whole form.
    pub fn form(message: impl Into<String>) -> Self {
        Self(vec![(None, message.into())])
    }

    /// Adds an error about `name`.
    pub fn add(&mut self, name: &'static str, message: impl Into<String>) {
        self.0.push((Some(name), message.into()));
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn of(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == Some(name))
            .map(|(_, m)| m.as_str())
    }
}

/// A page's frame: `title`, the signed-in navigation when `signed_in`
/// (with the CSRF token for its sign-out form), a notice, the form errors'
/// summary, then `body`.
pub struct Frame<'a> {
    /// The page's title and heading.
    pub title: &'a str,
    /// The CSRF token of the session, when signed in.
    pub signed_in: Option<&'a str>,
    /// A message about what just happened.
    pub notice: Option<&'a str>,
    /// The form's errors.
    pub errors: &'a Errors,
    /// Whether the page loads the print script.
    pub print: bool,
}

impl<'a> Frame<'a> {
    /// A page before sign-in, with no notice and no print script.
    pub fn new(title: &'a str, errors: &'a Errors) -> Self {
        Self {
            title,
            signed_in: None,
            notice: None,
            errors,
            print: false,
        }
    }

    /// Signed in, with the session's CSRF token (for the sign-out form).
    pub fn signed_in(mut self, csrf: &'a str) -> Self {
        self.signed_in = Some(csrf);
        self
    }

    /// With a message about what just happened.
    pub fn notice(mut self, notice: Option<&'a str>) -> Self {
        self.notice = notice;
        self
    }

    /// Loading the print script.
    pub fn print(mut self) -> Self {
        self.print = true;
        self
    }
}

/// A whole page.
pub fn page(frame: Frame<'_>, body: Markup) -> Markup {
    let title = if frame.errors.is_empty() {
        format!("{} · echorelay", frame.title)
    } else {
        format!("Error: {} · echorelay", frame.title)
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) }
                link rel="stylesheet" href=(STYLESHEET);
                @if frame.print {
                    script src=(PRINT_SCRIPT) defer {}
                }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    p.brand { "echorelay" }
                    @if let Some(csrf) = frame.signed_in {
                        nav aria-label="Account" {
                            ul {
                                li { a href="/account" { "Account" } }
                                li { a href="/account/password" { "Password" } }
                                li { a href="/account/backup-codes" { "Backup codes" } }
                                li {
                                    form.inline method="post" action="/account/sign-out" {
                                        (csrf_field(csrf))
                                        button.link type="submit" { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (frame.title) }
                    @if let Some(n) = frame.notice {
                        p.notice role="status" { (n) }
                    }
                    @if !frame.errors.is_empty() {
                        div.summary role="alert" aria-labelledby="summary-title" {
                            h2 id="summary-title" { "There is a problem" }
                            ul {
                                @for (name, message) in &frame.errors.0 {
                                    li {
                                        @if let Some(n) = name {
                                            a href={ "#" (n) } { (message) }
                                        } @else {
                                            (message)
                                        }
                                    }
                                }
                            }
                        }
                    }
                    (body)
                }
                footer {
                    p { a href="/licenses" { "Licenses" } }
                }
            }
        }
    }
}

/// The hidden CSRF field of every form.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// One labelled input, its hint and its error tied to it by
/// `aria-describedby`, marked `aria-invalid` when in error.
pub fn field(f: &Field<'_>, errors: &Errors) -> Markup {
    let error = errors.of(f.name);
    let hint_id = format!("{}-hint", f.name);
    let error_id = format!("{}-error", f.name);
    let mut described = Vec::new();
    if f.hint.is_some() {
        described.push(hint_id.as_str());
    }
    if error.is_some() {
        described.push(error_id.as_str());
    }
    let described = (!described.is_empty()).then(|| described.join(" "));
    html! {
        div.field.invalid[error.is_some()] {
            label for=(f.name) { (f.label) }
            @if let Some(h) = f.hint {
                p.hint id=(hint_id) { (h) }
            }
            @if let Some(e) = error {
                p.error id=(error_id) { span.visually-hidden { "Error: " } (e) }
            }
            input id=(f.name) name=(f.name) type=(f.kind) autocomplete=(f.autocomplete)
                value=[f.value] inputmode=[f.inputmode] maxlength=(f.maxlength)
                aria-invalid=[error.map(|_| "true")] aria-describedby=[described]
                required spellcheck="false" autocapitalize="none";
        }
    }
}

/// The "trust this browser" checkbox.
pub fn trust_box(id: &str, days: i64) -> Markup {
    html! {
        div.check {
            input type="checkbox" id=(id) name="trust_device" value="1";
            label for=(id) { "Trust this browser for " (days) " days: later sign-ins here ask only for the password" }
        }
    }
}

/// A date as a person reads it.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The QR code's SVG as core made it, without its XML prologue, as an
/// image with a name.
pub fn qr(svg: &str) -> Markup {
    let start = svg.find("<svg").unwrap_or(0);
    let body = svg.get(start..).unwrap_or_default();
    let named = body.replacen(
        "<svg",
        "<svg role=\"img\" aria-label=\"QR code of your authenticator secret\" class=\"qr\"",
        1,
    );
    PreEscaped(named)
}

/// The backup codes, once, with download and print.
pub fn backup_codes(codes: &[String], csrf: &str, next: Option<(&str, &str)>) -> Markup {
    let joined = codes.join(" ");
    html! {
        p { "Each code signs you in once when you cannot use your authenticator app. "
            strong { "They are shown only now:" } " download them, print them or write them down, and keep them somewhere safe. Making new codes ends these." }
        ol.codes id="backup-codes" {
            @for c in codes {
                li { code { (c) } }
            }
        }
        div.actions {
            form method="post" action="/account/backup-codes/download" {
                (csrf_field(csrf))
                input type="hidden" name="codes" value=(joined);
                button type="submit" { "Download as a text file" }
            }
            button.secondary type="button" data-print hidden { "Print" }
        }
        p.hint.no-print { "To print without the button, use your browser's Print command." }
        @if let Some((href, text)) = next {
            p.no-print { a.button href=(href) { (text) } }
        }
    }
}
