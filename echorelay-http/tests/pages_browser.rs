//! The account pages in a real browser: Debian's headless Chromium driven
//! through chromedriver (WebDriver, fantoccini) against the real router
//! served on 127.0.0.1 (in memory, with a manual clock set to now, so the
//! cookies' dates are the browser's).
//!
//! Every page is checked with axe-core in the same browser (zero
//! violations). With `ECHORELAY_SCREENSHOTS=1` the test writes each page
//! to `docs/pages/*.png`.
//!
//! Skipped with one printed line when chromium, chromedriver or axe-core
//! is missing, unless `ECHORELAY_REQUIRE_SERVICES=1` (then it fails).
//! `.ci/run` installs all three. axe-core is read from `AXE_CORE_JS`, else
//! `node_modules/axe-core/axe.min.js` at the workspace root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

use chrono::{Duration, DurationRound, Utc};
use echorelay::core::account::totp::{TotpSeed, code_for_step, step_at};
use echorelay::core::clock::ManualClock;
use echorelay::prelude::*;
use echorelay_http::{HttpConfig, router};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple 2026";
const NEW_PASSWORD: &str = "velvet otter quarry lantern 1987";

// --- tools ---------------------------------------------------------------------

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn axe_path() -> PathBuf {
    std::env::var_os("AXE_CORE_JS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../node_modules/axe-core/axe.min.js"),
        PathBuf::from,
    )
}

struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
    axe: String,
}

/// Chromium, chromedriver and axe-core, or `None` (one printed line)
/// when one is missing and services are not required.
fn tools() -> Option<Tools> {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
    let chromedriver = on_path(&["chromedriver"]);
    let axe = std::fs::read_to_string(axe_path()).ok();
    match (chromium, chromedriver, axe) {
        (Some(chromium), Some(chromedriver), Some(axe)) => Some(Tools {
            chromium,
            chromedriver,
            axe,
        }),
        _ => {
            let why = "chromium, chromedriver or axe-core is missing (apt-get install chromium chromium-driver; npm install axe-core)";
            if std::env::var("ECHORELAY_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                panic!("ECHORELAY_REQUIRE_SERVICES=1 but {why}");
            }
            println!("skipped: {why}");
            None
        }
    }
}

/// A chromedriver process on a free port, ended on drop.
struct Driver {
    child: Child,
    url: String,
    tools: Tools,
    profiles: Vec<PathBuf>,
}

impl Drop for Driver {
    /// Ends chromedriver and the browsers it started, also those of a
    /// test that failed before closing them (found by their own profile
    /// directory on their command line, so nothing else is touched).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let ours = |cmdline: &str| {
            self.profiles
                .iter()
                .any(|p| cmdline.contains(&format!("--user-data-dir={}\0", p.display())))
        };
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if ours(&String::from_utf8_lossy(&cmdline)) {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
        for p in &self.profiles {
            // A browser just ended may still be writing its profile.
            for _ in 0..10 {
                if std::fs::remove_dir_all(p).is_ok() || !p.exists() {
                    break;
                }
                std::thread::sleep(StdDuration::from_millis(100));
            }
        }
    }
}

impl Driver {
    async fn start(tools: Tools) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            tools,
            profiles: Vec::new(),
        }
    }

    /// A new browser (its own profile: its own cookies), light or dark.
    async fn browser(&mut self, dark: bool) -> Client {
        // One profile per browser in the whole process (the tests run
        // side by side): two Chromiums on one profile would be one.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let profile = std::env::temp_dir().join(format!(
            "echorelay-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        self.profiles.push(profile.clone());
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--window-size=1000,1000".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if dark {
            args.push("--force-dark-mode".to_owned());
            args.push("--blink-settings=preferredColorScheme=0".to_owned());
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.tools.chromium.to_string_lossy(),
                "args": args,
            }
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

// --- the relay -----------------------------------------------------------------

struct World {
    relay: EchoRelay,
    clock: ManualClock,
    base: String,
}

impl World {
    async fn start() -> Self {
        // Now (to the second), so the cookies' expiry dates are right for
        // the browser; moved on by hand for new TOTP steps and timeouts.
        let now = Utc::now().duration_trunc(Duration::seconds(1)).unwrap();
        let clock = ManualClock::new(now);
        let relay = EchoRelay::builder()
            .clock(Arc::new(clock.clone()))
            .account_policy(echorelay_testkit::test_account_policy())
            .build()
            .unwrap();
        let app = router(relay.clone(), HttpConfig::local()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        World {
            relay,
            clock,
            base: format!("http://{addr}"),
        }
    }

    /// An account (no second factor yet) and a project it owns.
    async fn member(&self, email: &str, project: Option<(&str, &str)>) -> UserId {
        let user = self
            .relay
            .accounts()
            .register(email, SecretString::from(PASSWORD), None)
            .await
            .unwrap();
        if let Some((slug, name)) = project {
            self.relay
                .config()
                .create_project(user, None, slug, name)
                .await
                .unwrap();
        }
        user
    }

    /// The code an authenticator shows for `seed` now (the clock moved
    /// on a step first, so every code is a new one).
    fn next_code(&self, seed: &TotpSeed) -> String {
        self.clock.advance(Duration::seconds(30));
        let params = self.relay.accounts().policy().totp;
        let step = step_at(&params, self.clock.now().timestamp() as u64);
        code_for_step(seed, &params, step).unwrap().to_string()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

// --- page helpers -----------------------------------------------------------------

async fn path(c: &Client) -> String {
    let u = c.current_url().await.unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    }
}

async fn body_text(c: &Client) -> String {
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Types `text` into the field `css` (emptied first). A page that is
/// still settling (a loaded machine: "not interactable") is waited for,
/// up to 10 s.
async fn fill(c: &Client, css: &str, text: &str) {
    let mut last = None;
    for _ in 0..100 {
        let e = c.find(Locator::Css(css)).await.unwrap();
        match e.clear().await {
            Ok(()) => return e.send_keys(text).await.unwrap(),
            Err(why) => last = Some(why),
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    panic!("{css} never took input: {last:?}");
}

async fn click(c: &Client, css: &str) {
    let mut last = None;
    for _ in 0..100 {
        let e = c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match e.click().await {
            Ok(()) => return,
            Err(why) => last = Some(why),
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    panic!("{css} never took a click: {last:?}");
}

/// Clicks `css` (a submit button or a link) and waits until the next
/// page has loaded.
async fn submit(c: &Client, css: &str) {
    c.execute("window.__before_navigation = true;", vec![])
        .await
        .unwrap();
    click(c, css).await;
    for _ in 0..1200 {
        let loaded = c
            .execute(
                "return window.__before_navigation === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await;
        if matches!(loaded, Ok(Value::Bool(true))) {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(25)).await;
    }
    panic!("clicking {css} led to no new page");
}

/// Runs axe-core on the page: no violation of any rule it checks by
/// default (WCAG 2 A/AA and best practices), in the page's colour scheme.
async fn axe(c: &Client, axe_js: &str, page: &str) {
    c.execute(&format!("{axe_js}\n;return true;"), vec![])
        .await
        .unwrap();
    let found = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               axe.run(document, {resultTypes: ['violations']})
                 .then(r => done(r.violations.map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
                 .catch(e => done(['axe did not run: ' + e]));"#,
            vec![],
        )
        .await
        .unwrap();
    let found: Vec<String> = serde_json::from_value(found).unwrap();
    assert!(found.is_empty(), "axe-core on {page}: {found:#?}");
}

/// The page's layout fits `width` CSS pixels: nothing scrolls sideways.
async fn fits(c: &Client, page: &str) {
    let v = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    let (scroll, inner) = (v[0].as_i64().unwrap(), v[1].as_i64().unwrap());
    assert!(
        scroll <= inner,
        "{page} scrolls sideways: {scroll} > {inner}"
    );
}

/// axe-core, and with `ECHORELAY_SCREENSHOTS=1` a screenshot of the page
/// (its whole height) as docs/pages/`name`.png.
async fn check(c: &Client, axe_js: &str, name: &str) {
    axe(c, axe_js, name).await;
    if std::env::var("ECHORELAY_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pages");
        std::fs::create_dir_all(&dir).unwrap();
        let (w, h0) = c.get_window_size().await.unwrap();
        let (w, h0) = (w as u32, h0 as u32);
        let h = c
            .execute("return document.documentElement.scrollHeight;", vec![])
            .await
            .unwrap()
            .as_u64()
            .unwrap()
            .clamp(400, 3000) as u32;
        // The window's outer size: room for the page's height.
        c.set_window_size(w, h + 140).await.unwrap();
        let png = c.screenshot().await.unwrap();
        c.set_window_size(w, h0).await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

async fn sign_in(c: &Client, w: &World, email: &str, password: &str) {
    // Past the password throttle's backoff after a failure (1 s, doubling).
    w.clock.advance(Duration::seconds(5));
    c.goto(&w.url("/account/sign-in")).await.unwrap();
    fill(c, "#email", email).await;
    fill(c, "#password", password).await;
    submit(c, "form[action='/account/sign-in'] button[type=submit]").await;
}

async fn totp(c: &Client, code: &str, trust: bool) {
    assert_eq!(path(c).await, "/account/second-factor");
    fill(c, "#code", code).await;
    if trust {
        click(c, "#trust-totp").await;
    }
    submit(c, "form:has(#code) button[type=submit]").await;
}

async fn backup(c: &Client, code: &str) {
    assert_eq!(path(c).await, "/account/second-factor");
    fill(c, "#backup_code", code).await;
    submit(c, "form:has(#backup_code) button[type=submit]").await;
}

async fn sign_out(c: &Client) {
    submit(c, "form[action='/account/sign-out'] button").await;
    assert_eq!(path(c).await, "/account/sign-in?m=signed-out");
}

/// Signs in `email` for the first time through enrollment: the code is
/// computed from the secret the page shows. Returns the seed and the
/// backup codes the next page shows.
async fn enroll(
    c: &Client,
    w: &World,
    email: &str,
    axe_js: Option<&str>,
) -> (TotpSeed, Vec<String>) {
    sign_in(c, w, email, PASSWORD).await;
    assert_eq!(path(c).await, "/account/enroll");
    let secret = c
        .find(Locator::Css("#totp-secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let seed = TotpSeed::from_base32(&secret.replace(' ', "")).unwrap();
    assert!(
        c.find(Locator::Css("main svg.qr")).await.is_ok(),
        "the QR code is on the page"
    );
    if let Some(a) = axe_js {
        check(c, a, "enroll").await;
    }
    fill(c, "#code", &w.next_code(&seed)).await;
    submit(c, "form[action='/account/enroll'] button[type=submit]").await;
    let mut codes = Vec::new();
    for e in c
        .find_all(Locator::Css("#backup-codes code"))
        .await
        .unwrap()
    {
        codes.push(e.text().await.unwrap());
    }
    assert_eq!(codes.len(), 10, "{}", body_text(c).await);
    (seed, codes)
}

// --- the tests ---------------------------------------------------------------------

/// Every account task from the browser: enrollment with a code computed
/// from the shown secret, backup codes once, the account page, a trusted
/// browser skipping TOTP until revoked (through a step-up), a backup code
/// used once and refused twice, a password change ending the other
/// session and the trusted browsers, sign-out everywhere. axe-core on
/// every page; screenshots on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_does_every_account_task_in_chromium() {
    let Some(tools) = tools() else { return };
    let axe_js = tools.axe.clone();
    let axe_js = axe_js.as_str();
    let w = World::start().await;
    w.member("ada@example.com", Some(("acme", "Acme webhooks")))
        .await;
    let mut driver = Driver::start(tools).await;
    let c = driver.browser(false).await;

    // Not signed in: the account page sends to sign-in.
    c.goto(&w.url("/account")).await.unwrap();
    assert_eq!(path(&c).await, "/account/sign-in");
    check(&c, axe_js, "sign-in").await;

    // First sign-in: enrollment, then the backup codes, once.
    let (seed, codes) = enroll(&c, &w, "ada@example.com", Some(axe_js)).await;
    let print = c.find(Locator::Css("[data-print]")).await.unwrap();
    assert!(
        print.is_displayed().await.unwrap(),
        "the Print button's script (script-src 'self') ran"
    );
    check(&c, axe_js, "backup-codes").await;
    submit(&c, "a.button[href='/account']").await;
    assert_eq!(path(&c).await, "/account");
    check(&c, axe_js, "account").await;
    let text = body_text(&c).await;
    assert!(text.contains("This session"), "{text}");
    assert!(
        text.contains("Acme webhooks") && text.contains("owner"),
        "{text}"
    );
    assert!(text.contains("No browser is trusted"), "{text}");

    // The __Host- cookies work on http://127.0.0.1 (a secure context).
    let cookies = c.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|k| k.name() == "__Host-er_session")
        .expect("the session cookie is kept");
    assert_eq!(session.secure(), Some(true));
    assert_eq!(session.http_only(), Some(true));
    assert!(cookies.iter().all(|k| k.name() != "__Host-er_challenge"));

    // Sign out; sign in with TOTP and trust this browser.
    sign_out(&c).await;
    sign_in(&c, &w, "ada@example.com", PASSWORD).await;
    check(&c, axe_js, "second-factor").await;
    totp(&c, &w.next_code(&seed), true).await;
    assert_eq!(path(&c).await, "/account");
    assert!(body_text(&c).await.contains("Stop trusting this browser"));

    // Again: the password alone, no code asked.
    sign_out(&c).await;
    w.clock.advance(Duration::seconds(30));
    sign_in(&c, &w, "ada@example.com", PASSWORD).await;
    assert_eq!(path(&c).await, "/account", "a trusted browser skips TOTP");

    // Revoke it later: that needs a step-up first.
    w.clock.advance(Duration::minutes(11));
    c.goto(&w.url("/account")).await.unwrap();
    submit(&c, "form[action='/account/devices/revoke'] button").await;
    assert_eq!(path(&c).await, "/account/step-up?for=devices");
    check(&c, axe_js, "step-up").await;
    fill(&c, "#password", PASSWORD).await;
    submit(&c, "form:has(#password) button[type=submit]").await;
    assert_eq!(path(&c).await, "/account?m=stepped-up");
    submit(&c, "form[action='/account/devices/revoke'] button").await;
    assert_eq!(path(&c).await, "/account?m=device-revoked");
    assert!(body_text(&c).await.contains("No browser is trusted"));
    sign_out(&c).await;
    sign_in(&c, &w, "ada@example.com", PASSWORD).await;
    assert_eq!(
        path(&c).await,
        "/account/second-factor",
        "TOTP is asked again after the revocation"
    );

    // A backup code works once, then is refused, twice.
    backup(&c, &codes[0]).await;
    assert_eq!(path(&c).await, "/account");
    sign_out(&c).await;
    for _ in 0..2 {
        w.clock.advance(Duration::seconds(30));
        sign_in(&c, &w, "ada@example.com", PASSWORD).await;
        backup(&c, &codes[0]).await;
        assert_eq!(path(&c).await, "/account/sign-in?m=refused");
        let text = body_text(&c).await;
        assert!(text.contains("That code was not accepted"), "{text}");
    }
    check(&c, axe_js, "sign-in-refused").await;

    // A second browser signs in and is trusted; the first changes the
    // password: the second's session ends and it is trusted no more.
    let other = driver.browser(false).await;
    sign_in(&other, &w, "ada@example.com", PASSWORD).await;
    totp(&other, &w.next_code(&seed), true).await;
    assert_eq!(path(&other).await, "/account");
    sign_in(&c, &w, "ada@example.com", PASSWORD).await;
    totp(&c, &w.next_code(&seed), false).await;
    assert_eq!(path(&c).await, "/account");
    assert!(body_text(&c).await.contains("Another session"));
    c.goto(&w.url("/account/password")).await.unwrap();
    check(&c, axe_js, "password").await;
    fill(&c, "#current_password", PASSWORD).await;
    fill(&c, "#new_password", NEW_PASSWORD).await;
    fill(&c, "#confirm_password", NEW_PASSWORD).await;
    submit(&c, "form[action='/account/password'] button[type=submit]").await;
    assert_eq!(path(&c).await, "/account?m=password-changed");
    let text = body_text(&c).await;
    assert!(text.contains("Your password is changed"), "{text}");
    assert!(!text.contains("Another session"), "{text}");
    assert!(text.contains("No browser is trusted"), "{text}");
    other.goto(&w.url("/account")).await.unwrap();
    assert_eq!(path(&other).await, "/account/sign-in?m=ended");
    assert!(body_text(&other).await.contains("Your session has ended"));
    // The old password is refused; the new one leads to TOTP again (the
    // trusted browser is not trusted any more).
    sign_in(&other, &w, "ada@example.com", PASSWORD).await;
    assert_eq!(path(&other).await, "/account/sign-in");
    sign_in(&other, &w, "ada@example.com", NEW_PASSWORD).await;
    assert_eq!(path(&other).await, "/account/second-factor");
    totp(&other, &w.next_code(&seed), false).await;
    assert_eq!(path(&other).await, "/account");

    // New backup codes (the password change was a fresh proof).
    c.goto(&w.url("/account/backup-codes")).await.unwrap();
    check(&c, axe_js, "backup-codes-renew").await;
    submit(&c, "form[action='/account/backup-codes'] button").await;
    let fresh = c
        .find_all(Locator::Css("#backup-codes code"))
        .await
        .unwrap()
        .len();
    assert_eq!(fresh, 10);

    // Sign out everywhere: both browsers are out.
    c.goto(&w.url("/account")).await.unwrap();
    submit(&c, "form[action='/account/sign-out-everywhere'] button").await;
    assert_eq!(path(&c).await, "/account/sign-in?m=signed-out-everywhere");
    other.goto(&w.url("/account")).await.unwrap();
    assert_eq!(path(&other).await, "/account/sign-in?m=ended");

    other.close().await.unwrap();
    c.close().await.unwrap();
}

/// The value of `attr` of the element `css`.
async fn attr(c: &Client, css: &str, attr: &str) -> Option<String> {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .attr(attr)
        .await
        .unwrap()
}

/// Field `id` is marked invalid and its error is tied to it.
async fn marked(c: &Client, id: &str) -> String {
    assert_eq!(
        attr(c, &format!("#{id}"), "aria-invalid").await.as_deref(),
        Some("true"),
        "{id} is marked: {}",
        body_text(c).await
    );
    let described = attr(c, &format!("#{id}"), "aria-describedby")
        .await
        .unwrap_or_default();
    assert!(described.contains(&format!("{id}-error")), "{described}");
    c.find(Locator::Css(&format!("#{id}-error")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Sets a form control's value behind the page's back (what a forged or
/// replayed request would send), bypassing `maxlength`.
async fn set_value(c: &Client, css: &str, value: &str) {
    c.execute(
        "document.querySelector(arguments[0]).value = arguments[1];",
        vec![json!(css), json!(value)],
    )
    .await
    .unwrap();
}

/// Bad input: the page says what to do, in words, with the field marked;
/// never a 500 (no "Something went wrong" page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_in_words_with_the_field_marked() {
    let Some(tools) = tools() else { return };
    let axe_js = tools.axe.clone();
    let axe_js = axe_js.as_str();
    let w = World::start().await;
    w.member("bo@example.com", None).await;
    w.member("cy@example.com", None).await;
    let mut driver = Driver::start(tools).await;
    let c = driver.browser(false).await;

    // A wrong CSRF token, then none: refused, the form renewed.
    c.goto(&w.url("/account/sign-in")).await.unwrap();
    fill(&c, "#email", "bo@example.com").await;
    fill(&c, "#password", PASSWORD).await;
    set_value(&c, "input[name=csrf]", "forged").await;
    submit(&c, "form[action='/account/sign-in'] button").await;
    let text = body_text(&c).await;
    assert!(text.contains("This form has expired"), "{text}");
    assert_eq!(
        attr(&c, "#email", "value").await.as_deref(),
        Some("bo@example.com")
    );
    c.execute(
        "document.querySelector('input[name=csrf]').remove();",
        vec![],
    )
    .await
    .unwrap();
    fill(&c, "#password", PASSWORD).await;
    submit(&c, "form[action='/account/sign-in'] button").await;
    assert!(body_text(&c).await.contains("This form has expired"));

    // An overlong email; an empty password.
    c.goto(&w.url("/account/sign-in")).await.unwrap();
    set_value(&c, "#email", &format!("{}@example.com", "a".repeat(300))).await;
    submit(&c, "form[action='/account/sign-in'] button").await;
    assert!(marked(&c, "email").await.contains("at most 254 characters"));
    assert!(marked(&c, "password").await.contains("Enter your password"));
    check(&c, axe_js, "sign-in-errors").await;

    // A body over the server's limit: told, not a server error.
    c.goto(&w.url("/account/sign-in")).await.unwrap();
    set_value(&c, "#email", &"b".repeat(70 * 1024)).await;
    fill(&c, "#password", PASSWORD).await;
    submit(&c, "form[action='/account/sign-in'] button").await;
    let text = body_text(&c).await;
    assert!(text.contains("The form could not be read"), "{text}");

    // A wrong password and an unknown account read the same.
    sign_in(&c, &w, "bo@example.com", "not the password at all").await;
    let wrong = marked(&c, "password").await;
    sign_in(&c, &w, "nobody@example.com", "not the password at all").await;
    assert_eq!(marked(&c, "password").await, wrong);
    assert!(wrong.contains("not right"), "{wrong}");

    // Enrollment: a wrong code keeps the challenge, says so, and does
    // not show the secret again.
    sign_in(&c, &w, "bo@example.com", PASSWORD).await;
    assert_eq!(path(&c).await, "/account/enroll");
    let secret = c
        .find(Locator::Css("#totp-secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let seed = TotpSeed::from_base32(&secret.replace(' ', "")).unwrap();
    fill(&c, "#code", "000000").await;
    submit(&c, "form[action='/account/enroll'] button").await;
    assert!(marked(&c, "code").await.contains("did not match"));
    assert!(c.find(Locator::Css("#totp-secret")).await.is_err());
    check(&c, axe_js, "enroll-error").await;
    fill(&c, "#code", &w.next_code(&seed)).await;
    submit(&c, "form[action='/account/enroll'] button").await;
    assert_eq!(
        c.find_all(Locator::Css("#backup-codes code"))
            .await
            .unwrap()
            .len(),
        10
    );
    c.goto(&w.url("/account")).await.unwrap();
    sign_out(&c).await;

    // A wrong TOTP code ends the attempt; the second-factor page is then
    // gone until the next sign-in.
    w.clock.advance(Duration::seconds(30));
    sign_in(&c, &w, "bo@example.com", PASSWORD).await;
    totp(&c, "123456", false).await;
    assert_eq!(path(&c).await, "/account/sign-in?m=refused");
    assert!(body_text(&c).await.contains("That code was not accepted"));
    c.goto(&w.url("/account/second-factor")).await.unwrap();
    assert_eq!(path(&c).await, "/account/sign-in?m=restart");
    // An overlong code is refused before it is checked (the attempt goes
    // on); an empty one is asked for.
    sign_in(&c, &w, "bo@example.com", PASSWORD).await;
    set_value(&c, "#code", &"9".repeat(100)).await;
    submit(&c, "form:has(#code) button[type=submit]").await;
    assert!(marked(&c, "code").await.contains("at most 32 characters"));
    check(&c, axe_js, "second-factor-error").await;
    // An expired challenge: the right code, six minutes late.
    w.clock.advance(Duration::minutes(6));
    totp(&c, &w.next_code(&seed), false).await;
    assert_eq!(path(&c).await, "/account/sign-in?m=refused");
    assert!(body_text(&c).await.contains("longer than 5 minutes"));

    // Signed in: a weak, a short and a mismatched new password.
    sign_in(&c, &w, "bo@example.com", PASSWORD).await;
    totp(&c, &w.next_code(&seed), false).await;
    c.goto(&w.url("/account/password")).await.unwrap();
    let old_csrf = attr(
        &c,
        "form[action='/account/password'] input[name=csrf]",
        "value",
    )
    .await
    .unwrap();
    for (new, again, field, words) in [
        ("password1234", "password1234", "new_password", "too common"),
        ("short", "short", "new_password", "at least 12 characters"),
        (
            NEW_PASSWORD,
            "something else entirely",
            "confirm_password",
            "differ",
        ),
    ] {
        fill(&c, "#current_password", PASSWORD).await;
        fill(&c, "#new_password", new).await;
        fill(&c, "#confirm_password", again).await;
        submit(&c, "form[action='/account/password'] button").await;
        let said = marked(&c, field).await;
        assert!(said.contains(words), "{said}");
    }
    check(&c, axe_js, "password-errors").await;
    // A wrong current password.
    fill(&c, "#current_password", "not my password at all").await;
    fill(&c, "#new_password", NEW_PASSWORD).await;
    fill(&c, "#confirm_password", NEW_PASSWORD).await;
    submit(&c, "form[action='/account/password'] button").await;
    assert!(marked(&c, "current_password").await.contains("not right"));
    // The change, then the old form replayed: refused as out of date.
    w.clock.advance(Duration::minutes(2));
    fill(&c, "#current_password", PASSWORD).await;
    fill(&c, "#new_password", NEW_PASSWORD).await;
    fill(&c, "#confirm_password", NEW_PASSWORD).await;
    submit(&c, "form[action='/account/password'] button").await;
    assert_eq!(path(&c).await, "/account?m=password-changed");
    c.goto(&w.url("/account/password")).await.unwrap();
    set_value(
        &c,
        "form[action='/account/password'] input[name=csrf]",
        &old_csrf,
    )
    .await;
    fill(&c, "#current_password", NEW_PASSWORD).await;
    fill(&c, "#new_password", "another fine password 4471").await;
    fill(&c, "#confirm_password", "another fine password 4471").await;
    submit(&c, "form[action='/account/password'] button").await;
    let text = body_text(&c).await;
    assert!(text.contains("This form is out of date"), "{text}");
    check(&c, axe_js, "form-expired").await;

    // No answer above was a server error.
    c.goto(&w.url("/account")).await.unwrap();
    assert!(!body_text(&c).await.contains("Something went wrong"));

    // And axe does find what it checks: an image without a text
    // alternative added to the page is a violation.
    c.execute(
        "const i = document.createElement('img'); i.src = '/account/none.png'; document.querySelector('main').appendChild(i);",
        vec![],
    )
    .await
    .unwrap();
    let missed = tokio::spawn({
        let c = c.clone();
        let axe_js = axe_js.to_owned();
        async move { axe(&c, &axe_js, "a page with a broken image").await }
    })
    .await;
    assert!(missed.is_err(), "axe-core reports an image without alt");
    c.close().await.unwrap();
}

/// The head of a plain HTTP/1.1 GET of `path`, lowercased.
async fn raw_head(w: &World, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = w.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8_lossy(&all).to_lowercase();
    text.split("\r\n\r\n").next().unwrap().to_owned()
}

/// The pages' CSP blocks an injected inline script and style (the
/// browser reports the violations), and a reflected value is text, never
/// markup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csp_blocks_an_injected_inline_script() {
    let Some(tools) = tools() else { return };
    let w = World::start().await;
    let mut driver = Driver::start(tools).await;
    let c = driver.browser(false).await;
    c.goto(&w.url("/account/sign-in")).await.unwrap();
    let outcome = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               const seen = [];
               document.addEventListener('securitypolicyviolation', e => seen.push(e.effectiveDirective));
               const s = document.createElement('script');
               s.textContent = 'window.__injected = true;';
               document.body.appendChild(s);
               const st = document.createElement('style');
               st.textContent = 'body { display: none }';
               document.head.appendChild(st);
               setTimeout(() => done({
                 ran: window.__injected === true,
                 hidden: getComputedStyle(document.body).display === 'none',
                 seen: seen,
               }), 300);"#,
            vec![],
        )
        .await
        .unwrap();
    // The page's own headers (a plain request: the CSP does not even let
    // the page fetch itself).
    let head = raw_head(&w, "/account/sign-in").await;
    for line in [
        format!(
            "content-security-policy: {}",
            echorelay_http::pages::PAGE_CSP
        ),
        "referrer-policy: no-referrer".to_owned(),
        "cache-control: no-store".to_owned(),
    ] {
        assert!(head.contains(&line), "{line} in {head}");
    }
    assert!(!echorelay_http::pages::PAGE_CSP.contains("unsafe"));
    let fetched = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               fetch('/account/sign-in').then(() => done('fetched'), () => done('blocked'));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        fetched,
        json!("blocked"),
        "a script could not even call home"
    );
    assert_eq!(outcome["ran"], false, "{outcome}");
    assert_eq!(outcome["hidden"], false, "{outcome}");
    let seen: Vec<String> = serde_json::from_value(outcome["seen"].clone()).unwrap();
    assert!(seen.iter().any(|d| d == "script-src-elem"), "{seen:?}");
    assert!(seen.iter().any(|d| d == "style-src-elem"), "{seen:?}");

    // A value sent back to the page is shown as typed, never run.
    let evil = "\"><script>window.__reflected=1</script>@example.com";
    c.goto(&w.url("/account/sign-in")).await.unwrap();
    set_value(&c, "#email", evil).await;
    fill(&c, "#password", "whatever it is").await;
    submit(&c, "form[action='/account/sign-in'] button").await;
    assert_eq!(attr(&c, "#email", "value").await.as_deref(), Some(evil));
    let scripts = c
        .execute(
            "return [document.scripts.length, window.__reflected === undefined];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(scripts, json!([0, true]));
    c.close().await.unwrap();
}

/// Every page reads at 320 px without sideways scrolling, and in dark
/// mode (the browser prefers dark: the page's colours follow and axe
/// still finds no contrast violation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_read_at_320_px_and_in_dark_mode() {
    let Some(tools) = tools() else { return };
    let axe_js = tools.axe.clone();
    let axe_js = axe_js.as_str();
    let w = World::start().await;
    w.member("di@example.com", Some(("zeta", "Zeta relay")))
        .await;
    let mut driver = Driver::start(tools).await;
    let c = driver.browser(true).await;
    let dark = c
        .execute(
            "return matchMedia('(prefers-color-scheme: dark)').matches;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(dark, json!(true), "the browser prefers dark");
    c.set_window_size(320, 900).await.unwrap();
    c.goto(&w.url("/account/sign-in")).await.unwrap();
    let inner = c
        .execute("return window.innerWidth;", vec![])
        .await
        .unwrap();
    assert!(inner.as_i64().unwrap() <= 400, "a narrow window: {inner}");
    let bg = c
        .execute(
            "return getComputedStyle(document.body).backgroundColor;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(bg, json!("rgb(18, 18, 20)"), "the dark palette is used");
    fits(&c, "sign-in").await;
    axe(&c, axe_js, "sign-in (dark, 320 px)").await;
    let (_, codes) = enroll(&c, &w, "di@example.com", None).await;
    assert_eq!(codes.len(), 10);
    fits(&c, "backup codes").await;
    axe(&c, axe_js, "backup codes (dark, 320 px)").await;
    c.goto(&w.url("/account")).await.unwrap();
    fits(&c, "account").await;
    check(&c, axe_js, "account-dark-320").await;
    c.goto(&w.url("/account/password")).await.unwrap();
    fits(&c, "password").await;
    axe(&c, axe_js, "password (dark, 320 px)").await;
    c.close().await.unwrap();
}
