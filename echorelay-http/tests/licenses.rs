//! `/licenses` is served, and is not stale: every crate it lists is in
//! Cargo.lock at the listed version, and every direct dependency of
//! echorelay-http is listed. When this fails, run `scripts/licenses.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{StatusCode, header};
use common::*;
use echorelay_http::HttpConfig;

const PAGE: &str = include_str!("../assets/licenses.html");
const LOCK: &str = include_str!("../../Cargo.lock");
const MANIFEST: &str = include_str!("../Cargo.toml");

/// `(name, version)` of every crate the page lists.
fn listed() -> BTreeSet<(String, String)> {
    PAGE.split("data-crate=\"")
        .skip(1)
        .map(|rest| {
            let (name, rest) = rest.split_once('"').unwrap();
            let version = rest
                .split("data-version=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            (name.to_owned(), version.to_owned())
        })
        .collect()
}

/// Every `[[package]]` of Cargo.lock: name → versions.
fn locked() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for block in LOCK.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        out.entry(field("name").unwrap())
            .or_default()
            .insert(field("version").unwrap());
    }
    out
}

/// The names under `[dependencies]` in echorelay-http/Cargo.toml.
fn direct_dependencies() -> BTreeSet<String> {
    let section = MANIFEST.split("\n[dependencies]\n").nth(1).unwrap();
    let section = section.split("\n[").next().unwrap();
    section
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['=', '.', ' ']).next().unwrap().to_owned())
        .collect()
}

#[test]
fn the_page_matches_cargo_lock_and_lists_every_direct_dependency() {
    let listed = listed();
    let locked = locked();
    assert!(listed.len() >= 30, "{} crates listed", listed.len());
    for (name, version) in &listed {
        let versions = locked.get(name).unwrap_or_else(|| {
            panic!(
                "/licenses lists {name}, which Cargo.lock does not have: run scripts/licenses.sh"
            )
        });
        assert!(
            versions.contains(version),
            "/licenses lists {name} {version}, Cargo.lock has {versions:?}: run scripts/licenses.sh"
        );
    }
    let names: BTreeSet<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    for dep in direct_dependencies() {
        assert!(
            names.contains(dep.as_str()),
            "{dep} is a dependency of echorelay-http but not on /licenses: run scripts/licenses.sh"
        );
    }
    // Texts with their notices, not just names.
    assert!(PAGE.matches("Copyright").count() >= 10);
}

async fn licenses_are_served(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let a = c.get("/licenses", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(a.text(), PAGE);
}

on_every_store!(licenses_are_served);
