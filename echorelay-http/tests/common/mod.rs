//! Shared by the end-to-end tests: a relay with a manual clock, a server
//! on an ephemeral port, and a client holding one keep-alive connection.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, header};
use chrono::{TimeZone, Utc};
use echorelay::core::audit::AuditEvent;
use echorelay::core::clock::ManualClock;
use echorelay::prelude::*;
use echorelay_http::{HttpConfig, router};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub const TARGET_TOKEN: &str = "outbound-bearer-token-Zq7x";

pub struct World {
    pub relay: EchoRelay,
    pub clock: ManualClock,
    pub owner: UserId,
    pub ip: IpAddr,
}

impl World {
    /// On the in-memory store.
    pub fn in_memory() -> Self {
        Self::on(EchoRelay::builder())
    }

    /// On a Postgres schema of its own (`DATABASE_URL`); `None` when the
    /// Postgres tests are skipped (no database and services not required).
    pub async fn postgres() -> Option<Self> {
        Some(Self::postgres_with_store().await?.0)
    }

    /// [`World::postgres`], with the store (its pool works in the test's
    /// own schema: for edits behind echorelay's back).
    pub async fn postgres_with_store() -> Option<(Self, echorelay::pg::PgStore)> {
        let db = echorelay::pg::test_database().await?;
        let store = db.fresh_store().await.unwrap();
        let world = Self::on(
            EchoRelay::builder()
                .store(store.clone())
                .keyring(Keyring::new(SecretKey::generate())),
        );
        Some((world, store))
    }

    fn on(builder: EchoRelayBuilder) -> Self {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        // bcrypt at its minimum cost: the tests log in many times.
        let policy = echorelay_testkit::test_account_policy();
        let relay = builder
            .clock(Arc::new(clock.clone()))
            .account_policy(policy)
            .build()
            .unwrap();
        World {
            relay,
            clock,
            owner: UserId::random(),
            ip: "203.0.113.10".parse().unwrap(),
        }
    }

    /// A project owned by `self.owner`, whose API keys may manage keys,
    /// with one line and a target holding a bearer secret.
    pub async fn project(&self, slug: &str) {
        let config = self.relay.config();
        config
            .create_project(self.owner, Some(self.ip), slug, "A project")
            .await
            .unwrap();
        let owner = Caller::dangerous_user_stepped_up(self.owner, Some(self.ip));
        let members = self
            .relay
            .voter()
            .authorize::<Members>(&owner, slug)
            .await
            .unwrap();
        config
            .set_api_keys_manage_keys(&members, true)
            .await
            .unwrap();
        let write = self
            .relay
            .voter()
            .authorize::<ConfigWrite>(&owner, slug)
            .await
            .unwrap();
        let line = config.create_line(&write, "orders").await.unwrap();
        config
            .create_target(
                &write,
                line.id,
                NewTarget {
                    name: "shop".into(),
                    url: "https://shop.example.com/hook".into(),
                    auth: AuthInput::Bearer(SecretString::from(TARGET_TOKEN)),
                    signing_secret: None,
                },
            )
            .await
            .unwrap();
    }

    pub async fn key(&self, slug: &str, role: Role) -> (String, echorelay::core::ids::KeyId) {
        // Minting needs a step-up: the owner's session has just made one.
        let owner = Caller::dangerous_user_stepped_up(self.owner, Some(self.ip));
        let grant = self
            .relay
            .voter()
            .authorize::<Keys>(&owner, slug)
            .await
            .unwrap();
        let minted = self
            .relay
            .keys()
            .mint(
                &grant,
                MintRequest {
                    environment: Environment::Test,
                    role,
                    label: format!("{role} key"),
                },
            )
            .await
            .unwrap();
        (minted.plaintext.expose_secret().to_owned(), minted.view.id)
    }

    /// Revokes key `id` of project `slug` as its owner.
    pub async fn revoke(&self, slug: &str, id: echorelay::core::ids::KeyId) {
        let owner = Caller::user(self.owner, None);
        let grant = self
            .relay
            .voter()
            .authorize::<Keys>(&owner, slug)
            .await
            .unwrap();
        self.relay.keys().revoke(&grant, id).await.unwrap();
    }

    pub async fn serve(&self, config: HttpConfig) -> Server {
        let app = router(self.relay.clone(), config).unwrap();
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
        Server { addr }
    }

    pub async fn audit(&self, slug: &str) -> Vec<AuditEvent> {
        let owner = Caller::user(self.owner, Some(self.ip));
        let grant = self
            .relay
            .voter()
            .authorize::<AuditRead>(&owner, slug)
            .await
            .unwrap();
        self.relay.audit().events(&grant, 0, 1000).await.unwrap()
    }
}

pub struct Server {
    pub addr: SocketAddr,
}

impl Server {
    /// A client on one new connection.
    pub async fn connect(&self) -> Client {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { sender }
    }
}

pub struct Client {
    pub sender: SendRequest<Full<Bytes>>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
}

impl Client {
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        key: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "relay.test");
        if let Some(k) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        self.sender
            .ready()
            .await
            .expect("the connection is still open");
        let res = self
            .sender
            .send_request(req.body(body).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str, key: Option<&str>) -> Answer {
        self.send(Method::GET, path, key, &[], None).await
    }

    pub async fn post_json(&mut self, path: &str, key: &str, body: Value) -> Answer {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.send(
            Method::POST,
            path,
            Some(key),
            &[],
            Some(("application/json", bytes)),
        )
        .await
    }
}

/// The value a `Set-Cookie` of the answer gives cookie `name`.
pub fn set_cookie(a: &Answer, name: &str) -> Option<String> {
    a.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// A browser over one keep-alive connection: it keeps the session, CSRF
/// and device cookies the server sets and sends them back.
pub struct Browser {
    pub client: Client,
    pub session: Option<String>,
    pub csrf: Option<String>,
    pub device: Option<String>,
    /// Headers every request of this browser carries (a proxy's).
    pub extra: Vec<(&'static str, String)>,
}

impl Browser {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            session: None,
            csrf: None,
            device: None,
            extra: Vec::new(),
        }
    }

    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> Answer {
        let mut cookies = Vec::new();
        if let Some(s) = &self.session {
            cookies.push(format!("__Host-er_session={s}"));
        }
        if let Some(d) = &self.device {
            cookies.push(format!("__Host-er_device={d}"));
        }
        let cookie = cookies.join("; ");
        let mut extra: Vec<(&str, &str)> =
            self.extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if !cookie.is_empty() {
            extra.push(("cookie", &cookie));
        }
        if csrf && let Some(t) = &self.csrf {
            extra.push(("x-csrf-token", t));
        }
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
        let a = self.client.send(method, path, None, &extra, body).await;
        if let Some(s) = set_cookie(&a, "__Host-er_session") {
            self.session = Some(s).filter(|s| !s.is_empty());
        }
        if let Some(c) = set_cookie(&a, "__Host-er_csrf") {
            self.csrf = Some(c).filter(|c| !c.is_empty());
        }
        if let Some(d) = set_cookie(&a, "__Host-er_device") {
            self.device = Some(d).filter(|d| !d.is_empty());
        }
        a
    }

    pub async fn post(&mut self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body), true).await
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.call(Method::GET, path, None, false).await
    }
}

pub fn assert_security_headers(a: &Answer) {
    assert_eq!(a.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(a.headers[header::X_FRAME_OPTIONS], "DENY");
    assert!(a.headers.contains_key(header::CONTENT_SECURITY_POLICY));
}

/// Runs each named `async fn(World)` test once on the in-memory store and
/// once on Postgres (skipped with one printed line without `DATABASE_URL`,
/// a failure with `ECHORELAY_REQUIRE_SERVICES=1`).
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::World::in_memory()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(w) = $crate::common::World::postgres().await {
                        super::$name(w).await
                    }
                }
            )*
        }
    };
}
