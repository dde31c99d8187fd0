//! # echorelay-store-s3
//!
//! Backup targets on the [`object_store`] crate: [`S3Target`] implements
//! core's [`BackupTarget`] port (`echorelay_core::backup::target`, whose
//! module docs are the contract) for S3-compatible buckets and for a
//! directory of the local filesystem, chosen by one URL:
//!
//! | URL | objects at |
//! |---|---|
//! | `s3://bucket` | the bucket's keys, as the object paths |
//! | `s3://bucket/some/prefix` | keys `some/prefix/<object path>` |
//! | `file:///absolute/directory` | files `<directory>/<object path>`; the directory must exist |
//!
//! ```no_run
//! use echorelay_store_s3::{S3Options, S3Target};
//!
//! # fn demo() -> Result<(), echorelay_core::backup::BackupError> {
//! // Credentials, region and endpoint from AWS_* (see below).
//! let target = S3Target::from_url("s3://my-backups/echorelay/prod")?;
//! // Or explicitly, e.g. a MinIO on the same host:
//! let target = S3Target::open(
//!     S3Options::new("s3://my-backups/echorelay")
//!         .endpoint("http://127.0.0.1:9000")
//!         .allow_http(true)
//!         .region("us-east-1")
//!         .path_style(true),
//! )?;
//! let local = S3Target::from_url("file:///var/backups/echorelay")?;
//! # let _ = (target, local);
//! # Ok(()) }
//! ```
//!
//! ## TLS: one crypto stack, ring
//!
//! The process keeps one rustls provider, `ring` (what sqlx and
//! echorelay-http use): object_store is built on `aws-base` with reqwest's
//! `rustls-no-provider` and ring for request signing, never aws-lc-rs (a
//! rustls with two providers cannot pick a default, and sqlx's TLS
//! connections then panic). [`S3Target::open`] installs ring as the
//! process default when none is installed. **Side effect for embedders:**
//! cargo unifies reqwest 0.13's features, so a reqwest 0.13 client that
//! your own code builds *before* the first `S3Target::open` panics unless
//! you install a provider first, e.g. at the start of `main`:
//! `rustls::crypto::ring::default_provider().install_default()`.
//!
//! ## S3 options
//!
//! An `s3://` target starts from object_store's
//! [`AmazonS3Builder::from_env`](object_store::aws::AmazonS3Builder::from_env),
//! which reads every `AWS_*` variable it knows, among them
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`),
//! `AWS_REGION` or `AWS_DEFAULT_REGION` (default `us-east-1`),
//! `AWS_ENDPOINT_URL` or `AWS_ENDPOINT` (another S3-compatible server),
//! `AWS_ALLOW_HTTP=true` (an `http://` endpoint), and
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` (default `false`: path-style requests,
//! `endpoint/bucket/key`, which every S3-compatible server accepts). Without
//! keys in the environment object_store looks for other AWS credentials
//! (web identity, ECS task role, EC2 instance metadata). The explicit
//! [`S3Options`] (endpoint, region, `allow_http`, path style) win over the
//! environment. Credentials are never taken from the URL: a URL with user
//! info or a query is refused.
//!
//! Conditional create is S3's `If-None-Match: *` on `PutObject`
//! (object_store's `PutMode::Create` with `S3ConditionalPut::ETagMatch`,
//! which this crate sets whatever `AWS_CONDITIONAL_PUT` says). Amazon S3
//! has honoured it since August 2024; MinIO, Cloudflare R2 and moto do too.
//! A server that ignores the header would let a second create overwrite
//! the first: check yours with this crate's test suite before relying on
//! it. Real S3 may answer a create racing another create of the same key
//! with `409 Conflict`; this target then looks whether an object is there
//! (it is `AlreadyExists` if so) and otherwise tries again, up to three
//! times.
//!
//! ## Uploads and the memory bound
//!
//! [`BackupTarget::upload`] is an S3 multipart upload (for a directory: a
//! staging file `<name>#<n>` beside the destination), driven through
//! object_store's [`WriteMultipart`]. The writer copies what it is given
//! into a part buffer of [`S3Options::part_size`] bytes (default 16 MiB);
//! a full part is sent as its own task, after waiting until fewer than
//! [`S3Options::parts_in_flight`] (default 2) parts are still being sent.
//! So the writer holds at most
//!
//! > `buffer_bound = part_size × (parts_in_flight + 1)`
//!
//! bytes of object data at once (48 MiB by default): the parts in flight
//! plus the one being filled. That is [`BackupTarget::buffer_bound`]. The
//! HTTP client's own buffers (a few hundred KiB per connection) come on
//! top; `tests/memory_bound.rs` uploads 256 MiB and measures the process's
//! peak heap against this bound. S3 takes at most 10,000 parts per object,
//! so the largest object is `10,000 × part_size` (156 GiB at 16 MiB); a
//! write past it fails with [`BackupError::Config`] naming the part size
//! to raise. Parts must be at least 5 MiB on S3 (the last excepted).
//!
//! The object appears only when [`ObjectWriter::finish`] completes the
//! upload. An aborted upload is deleted; a writer dropped unfinished
//! aborts its upload in the background (best effort). Parts of an upload
//! that was never aborted (the process died) stay in the bucket, billed
//! and invisible, until a lifecycle rule removes them: configure
//! `AbortIncompleteMultipartUpload` (e.g. after 7 days) on the bucket.
//!
//! ## Durability and consistency
//!
//! - **Amazon S3**: an object whose create or finish returned `Ok` is
//!   stored (S3 answers after storing it redundantly). S3 is strongly
//!   consistent since December 2020: a read, a listing or a delete after
//!   a successful write sees it. A multipart upload appears whole or not
//!   at all. Other S3-compatible servers promise what their own docs say
//!   (a single-disk MinIO survives what that disk survives).
//! - **Local directory**: files are written with `fsync` of the file and
//!   of its directory before `Ok` (object_store's `with_fsync`), so a
//!   finished object survives a power cut. An upload is a staging file
//!   renamed into place at finish (atomic on one filesystem); a create is
//!   a staging file hard-linked to its path (atomic, and fails if the path
//!   exists), so the filesystem must support hard links. A crash can leave
//!   staging files (`name#1`), which listings skip and which can be
//!   deleted. Deleting the last object of a subdirectory removes the
//!   empty directories up to the target's own. The directory is only as
//!   safe as its disk: put it on another machine or mount for a backup
//!   worth the name.
//! - **moto** (the CI's server) keeps everything in memory: for tests only.
//!   It honours `If-None-Match: *` (a second create is refused with 412),
//!   but looks the key up and then writes without a lock, so two racing
//!   creates can both win there: seen once in about 120 strict runs of the
//!   suite's race check (5 rounds of 8 racers each) on moto 5.2.6. CI
//!   therefore runs that check in its `ServerIsRacy` form against moto
//!   (`ECHORELAY_S3_RACY_CREATE=1`, see [`TestS3::server_is_racy`]).
//!
//! Requests that fail on the network or with a server error are retried by
//! object_store with exponential backoff (by default up to 10 times
//! within 3 minutes; [`S3Options::retry`]). A create retried after its
//! first attempt did write (a lost answer) is refused as `AlreadyExists`:
//! a caller that alone writes a path and sees `AlreadyExists` can read the
//! object back and compare.
//!
//! ## Errors
//!
//! Failures are mapped by object_store's error variant, never by message
//! text: not found → [`BackupError::NotFound`] for a read of one object,
//! and [`BackupError::Access`] for anything else (the bucket or directory
//! is missing); already exists → [`BackupError::AlreadyExists`];
//! unauthenticated or permission denied → [`BackupError::Access`];
//! unsupported operations and bad options → [`BackupError::Config`];
//! everything else → [`BackupError::Unavailable`]. object_store reports a
//! failed listing as a generic error whatever the HTTP status, so a
//! listing of a missing bucket is `Unavailable` (its message carries the
//! server's `NoSuchBucket`), while a create or upload there is `Access`. Messages name the
//! operation, the object and the target ([`BackupTarget::describe`]);
//! every URL in them loses its user info and query, S3's signature
//! details (`AWSAccessKeyId`, `StringToSign`, …) are replaced by `***`, and
//! no credential is ever put in one.
//!
//! ## Tests
//!
//! The backup target suite runs on a temporary directory always
//! ([`fresh_fs_target`]) and on the S3 server of `ECHORELAY_S3_URL`
//! when it is set ([`test_s3`]), each check under a random key prefix
//! that is emptied afterwards. `scripts/s3_server.sh` starts moto locally.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod location;
mod testing;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use echorelay_core::backup::{
    BackupError, BackupTarget, ObjectMeta, ObjectPath, ObjectReader, ObjectWriter,
};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};

use error::{Op, S3Error, clean_url, scrub};
use location::Location;

pub use object_store;
pub use testing::{
    TEST_FS_PART_SIZE, TEST_S3_PART_SIZE, TestS3, fresh_fs_target, fresh_fs_target_with, test_s3,
};

/// The default part size of an upload: 16 MiB.
pub const DEFAULT_PART_SIZE: usize = 16 * 1024 * 1024;
/// The default number of parts sent at once: 2.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 2;
/// S3's smallest part (all but the last): 5 MiB.
pub const MIN_S3_PART_SIZE: usize = 5 * 1024 * 1024;
/// The largest part size this crate takes: 1 GiB (S3 allows 5 GiB; a part
/// is held in memory).
pub const MAX_PART_SIZE: usize = 1024 * 1024 * 1024;
/// The most parts sent at once this crate takes: 64.
pub const MAX_PARTS_IN_FLIGHT: usize = 64;
/// S3's most parts in one upload: 10,000.
pub const MAX_S3_PARTS: usize = 10_000;

/// Attempts of a conditional create that S3 answered with a conflict
/// while no object was there.
const CREATE_ATTEMPTS: u32 = 3;

/// How to open an [`S3Target`]: the URL, and options that win over the
/// environment's (see the crate docs).
#[derive(Clone)]
pub struct S3Options {
    url: String,
    endpoint: Option<String>,
    region: Option<String>,
    allow_http: Option<bool>,
    path_style: Option<bool>,
    part_size: usize,
    parts_in_flight: usize,
    retry: Option<(usize, Duration)>,
}

impl S3Options {
    /// Options for the target at `url` (`s3://bucket[/prefix]` or
    /// `file:///absolute/directory`), with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            endpoint: None,
            region: None,
            allow_http: None,
            path_style: None,
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            retry: None,
        }
    }

    /// The S3 endpoint, for a server other than Amazon's (MinIO, R2,
    /// moto): `http(s)://host[:port]`. Overrides `AWS_ENDPOINT_URL`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The region. Overrides `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Whether an `http://` endpoint is allowed. Overrides
    /// `AWS_ALLOW_HTTP`.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = Some(allow);
        self
    }

    /// Path-style requests (`endpoint/bucket/key`, the default) or
    /// virtual-hosted ones (`bucket.endpoint/key`). Overrides
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`.
    pub fn path_style(mut self, path_style: bool) -> Self {
        self.path_style = Some(path_style);
        self
    }

    /// The size of an upload's parts (default 16 MiB; at least 5 MiB for
    /// S3, at most 1 GiB).
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes;
        self
    }

    /// How many parts of one upload are sent at once (default 2, from 1
    /// to 64).
    pub fn parts_in_flight(mut self, parts: usize) -> Self {
        self.parts_in_flight = parts;
        self
    }

    /// How often and how long a failed S3 request is retried (object_store's
    /// default: 10 times within 3 minutes).
    pub fn retry(mut self, max_retries: usize, timeout: Duration) -> Self {
        self.retry = Some((max_retries, timeout));
        self
    }

    /// The writer's bound with these options: `part_size × (parts_in_flight
    /// + 1)`.
    pub fn buffer_bound(&self) -> usize {
        self.part_size
            .saturating_mul(self.parts_in_flight.saturating_add(1))
    }
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("url", &clean_url(&self.url))
            .field("endpoint", &self.endpoint.as_deref().map(clean_url))
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .field("part_size", &self.part_size)
            .field("parts_in_flight", &self.parts_in_flight)
            .field("retry", &self.retry)
            .finish()
    }
}

/// A backup target on an S3-compatible bucket or a local directory (see
/// the crate docs). Cheap to clone; clones share the client.
#[derive(Clone)]
pub struct S3Target {
    store: Arc<dyn ObjectStore>,
    /// The key prefix of every object (S3 only; a directory is the store's
    /// own root).
    root: Option<ObjectPath>,
    /// An S3 bucket (not a directory).
    s3: bool,
    described: Arc<str>,
    part_size: usize,
    parts_in_flight: usize,
    /// Test support: removes a temporary directory with the last clone.
    _cleanup: Option<Arc<testing::DirGuard>>,
}

impl fmt::Debug for S3Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Target")
            .field("target", &self.described)
            .field("part_size", &self.part_size)
            .field("parts_in_flight", &self.parts_in_flight)
            .finish_non_exhaustive()
    }
}

impl S3Target {
    /// The target at `url`, with the default options and, for S3, the
    /// environment's `AWS_*` settings.
    pub fn from_url(url: &str) -> Result<Self, BackupError> {
        Self::open(S3Options::new(url))
    }

    /// The target described by `options`. Sends no request: a wrong
    /// bucket or credentials show on the first operation.
    pub fn open(options: S3Options) -> Result<Self, BackupError> {
        Ok(Self::open_inner(options)?)
    }

    fn open_inner(o: S3Options) -> Result<Self, S3Error> {
        if !(1..=MAX_PARTS_IN_FLIGHT).contains(&o.parts_in_flight) {
            return Err(S3Error::Config(format!(
                "parts in flight must be from 1 to {MAX_PARTS_IN_FLIGHT}, not {}",
                o.parts_in_flight
            )));
        }
        if !(1..=MAX_PART_SIZE).contains(&o.part_size) {
            return Err(S3Error::Config(format!(
                "the part size must be from 1 byte to {MAX_PART_SIZE}, not {}",
                o.part_size
            )));
        }
        let (store, root, s3, described): (Arc<dyn ObjectStore>, _, _, _) =
            match location::parse(&o.url)? {
                Location::S3 { bucket, prefix } => {
                    if o.part_size < MIN_S3_PART_SIZE {
                        return Err(S3Error::Config(format!(
                            "the part size must be at least {MIN_S3_PART_SIZE} bytes (5 MiB) \
                             on S3, not {}",
                            o.part_size
                        )));
                    }
                    // reqwest here has no TLS provider of its own: make
                    // ring (sqlx's, the process's only one) the process
                    // default unless the embedder installed one already.
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    let mut b = AmazonS3Builder::from_env()
                        .with_bucket_name(&bucket)
                        // Conditional create (`PutMode::Create`) as
                        // `If-None-Match: *`, whatever AWS_CONDITIONAL_PUT
                        // says: the port needs it.
                        .with_conditional_put(S3ConditionalPut::ETagMatch);
                    if let Some(e) = &o.endpoint {
                        b = b.with_endpoint(e);
                    }
                    if let Some(r) = &o.region {
                        b = b.with_region(r);
                    }
                    if let Some(a) = o.allow_http {
                        b = b.with_allow_http(a);
                    }
                    if let Some(p) = o.path_style {
                        b = b.with_virtual_hosted_style_request(!p);
                    }
                    if let Some((max_retries, retry_timeout)) = o.retry {
                        b = b.with_retry(RetryConfig {
                            max_retries,
                            retry_timeout,
                            ..RetryConfig::default()
                        });
                    }
                    let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
                    let store = b.build().map_err(|e| {
                        S3Error::Config(format!(
                            "the S3 options are unusable: {}",
                            scrub(&e.to_string())
                        ))
                    })?;
                    let mut described = format!("s3://{bucket}");
                    if let Some(p) = &prefix {
                        described.push('/');
                        described.push_str(p.as_str());
                    }
                    if let Some(e) = endpoint {
                        described.push_str(" at ");
                        described.push_str(&clean_url(&e));
                    }
                    (Arc::new(store), prefix, true, described)
                }
                Location::Fs { dir } => {
                    if !dir.is_dir() {
                        return Err(S3Error::Config(format!(
                            "{} is not an existing directory: create it first",
                            dir.display()
                        )));
                    }
                    let fs = LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| {
                            S3Error::Config(format!(
                                "{} cannot be used: {}",
                                dir.display(),
                                scrub(&e.to_string())
                            ))
                        })?
                        .with_fsync(true)
                        .with_automatic_cleanup(true);
                    let described = format!("file://{}", dir.display());
                    (Arc::new(fs), None, false, described)
                }
            };
        Ok(Self {
            store,
            root,
            s3,
            described: described.into(),
            part_size: o.part_size,
            parts_in_flight: o.parts_in_flight,
            _cleanup: None,
        })
    }

    /// The size of an upload's parts.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// How many parts of one upload are sent at once.
    pub fn parts_in_flight(&self) -> usize {
        self.parts_in_flight
    }

    /// The object_store key of `path`.
    fn key(&self, path: &ObjectPath) -> Result<Path, S3Error> {
        let full = match &self.root {
            Some(r) => format!("{r}/{path}"),
            None => path.as_str().to_owned(),
        };
        Path::parse(full)
            .map_err(|e| S3Error::Config(format!("{path} is not a valid key here: {e}")))
    }

    /// The object path of a listed key, if it is one (under the root, in
    /// the port's alphabet).
    fn relative(&self, location: &Path) -> Option<ObjectPath> {
        let key = location.as_ref();
        let rest = match &self.root {
            Some(r) => key.strip_prefix(r.as_str())?.strip_prefix('/')?,
            None => key,
        };
        ObjectPath::new(rest).ok()
    }

    fn fail(&self, op: Op, path: Option<&ObjectPath>, source: object_store::Error) -> S3Error {
        S3Error::Store {
            op,
            path: path.map_or_else(|| "every object".to_owned(), ObjectPath::to_string),
            object: path.cloned(),
            target: self.described.to_string(),
            source: Box::new(source),
        }
    }

    fn meta(&self, m: object_store::ObjectMeta) -> Option<ObjectMeta> {
        match self.relative(&m.location) {
            Some(path) => Some(ObjectMeta {
                path,
                size: m.size,
                last_modified: Some(m.last_modified),
            }),
            None => {
                tracing::debug!(
                    target = %self.described,
                    "a listed key is not an object path of the port; skipped"
                );
                None
            }
        }
    }
}

#[async_trait]
impl BackupTarget for S3Target {
    async fn create(&self, path: &ObjectPath, bytes: Bytes) -> Result<(), BackupError> {
        use object_store::Error as E;
        let key = self.key(path)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let put = self
                .store
                .put_opts(
                    &key,
                    PutPayload::from(bytes.clone()),
                    PutOptions::from(PutMode::Create),
                )
                .await;
            match put {
                Ok(_) => return Ok(()),
                Err(E::AlreadyExists { .. }) => {
                    // 412 (an object is there) or, on real S3, 409 (another
                    // conditional write of the key in progress): look.
                    match self.store.head(&key).await {
                        Ok(_) => return Err(BackupError::AlreadyExists(path.clone())),
                        Err(E::NotFound { .. }) if attempt < CREATE_ATTEMPTS => {
                            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt)))
                                .await;
                        }
                        Err(E::NotFound { .. }) => {
                            return Err(BackupError::Unavailable(format!(
                                "create {path} at {}: the server reported a conflicting \
                                 write {CREATE_ATTEMPTS} times and no object is there; try again",
                                self.described
                            )));
                        }
                        Err(e) => return Err(self.fail(Op::Create, Some(path), e).into()),
                    }
                }
                Err(e) => return Err(self.fail(Op::Create, Some(path), e).into()),
            }
        }
    }

    async fn upload(&self, path: &ObjectPath) -> Result<Box<dyn ObjectWriter>, BackupError> {
        let key = self.key(path)?;
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(|e| self.fail(Op::Upload, Some(path), e))?;
        Ok(Box::new(S3Writer {
            inner: Some(WriteMultipart::new_with_chunk_size(upload, self.part_size)),
            buf: Vec::new(),
            part_size: self.part_size,
            parts_in_flight: self.parts_in_flight,
            max_parts: self.s3.then_some(MAX_S3_PARTS),
            parts: 0,
            size: 0,
            broken: false,
            path: path.clone(),
            target: self.clone(),
        }))
    }

    async fn get(&self, path: &ObjectPath) -> Result<Box<dyn ObjectReader>, BackupError> {
        let key = self.key(path)?;
        let got = self
            .store
            .get(&key)
            .await
            .map_err(|e| self.fail(Op::Get, Some(path), e))?;
        Ok(Box::new(S3Reader {
            stream: got.into_stream(),
            path: path.clone(),
            target: self.clone(),
        }))
    }

    async fn list(&self, prefix: Option<&ObjectPath>) -> Result<Vec<ObjectMeta>, BackupError> {
        let at = match prefix {
            Some(p) => Some(self.key(p)?),
            None => match &self.root {
                Some(r) => Some(
                    Path::parse(r.as_str())
                        .map_err(|e| S3Error::Config(format!("the key prefix {r}: {e}")))?,
                ),
                None => None,
            },
        };
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(at.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.fail(Op::List, prefix, e))?;
        let mut out: Vec<ObjectMeta> = listed.into_iter().filter_map(|m| self.meta(m)).collect();
        // object_store lists what is strictly under the prefix; the port
        // also wants the object at the prefix itself.
        if let (Some(p), Some(key)) = (prefix, &at) {
            match self.store.head(key).await {
                Ok(m) => out.extend(self.meta(m)),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.fail(Op::List, Some(p), e).into()),
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out.dedup_by(|a, b| a.path == b.path);
        Ok(out)
    }

    async fn delete(&self, path: &ObjectPath) -> Result<(), BackupError> {
        let key = self.key(path)?;
        match self.store.delete(&key).await {
            Ok(()) => Ok(()),
            // A directory: the file is gone already. S3 answers a delete
            // of a missing key with success, so there it is the bucket.
            Err(object_store::Error::NotFound { .. }) if !self.s3 => Ok(()),
            Err(e) => Err(self.fail(Op::Delete, Some(path), e).into()),
        }
    }

    fn buffer_bound(&self) -> usize {
        self.part_size.saturating_mul(self.parts_in_flight + 1)
    }

    fn describe(&self) -> String {
        self.described.to_string()
    }
}

/// An upload in progress (see the crate docs on the memory bound).
struct S3Writer {
    /// `None` once finished or aborted.
    inner: Option<WriteMultipart>,
    /// The part being filled: at most `part_size` bytes.
    buf: Vec<u8>,
    part_size: usize,
    parts_in_flight: usize,
    max_parts: Option<usize>,
    /// Parts handed to `inner` so far.
    parts: usize,
    size: u64,
    /// A part or a limit failed: every later call fails.
    broken: bool,
    path: ObjectPath,
    target: S3Target,
}

impl S3Writer {
    fn check(&self) -> Result<(), S3Error> {
        if self.broken || self.inner.is_none() {
            return Err(S3Error::Broken {
                path: self.path.clone(),
                target: self.target.described.to_string(),
            });
        }
        Ok(())
    }

    /// Hands the part buffer to `inner`, once fewer than
    /// `parts_in_flight` parts are being sent.
    async fn send_part(&mut self) -> Result<(), S3Error> {
        if self.max_parts.is_some_and(|max| self.parts >= max) {
            self.broken = true;
            return Err(S3Error::TooManyParts {
                path: self.path.clone(),
                target: self.target.described.to_string(),
                max_parts: self.max_parts.unwrap_or_default(),
                part_size: self.part_size,
            });
        }
        let Some(w) = self.inner.as_mut() else {
            return Err(S3Error::Broken {
                path: self.path.clone(),
                target: self.target.described.to_string(),
            });
        };
        if let Err(e) = w.wait_for_capacity(self.parts_in_flight).await {
            self.broken = true;
            return Err(self.target.fail(Op::Write, Some(&self.path), e));
        }
        // A full part (exactly part_size bytes) is sent at once as one
        // task; a last, shorter one waits in `inner` for finish.
        w.put(Bytes::from(std::mem::take(&mut self.buf)));
        self.parts += 1;
        Ok(())
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BackupError> {
        self.check()?;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(self.part_size);
            }
            let room = self.part_size - self.buf.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.buf.extend_from_slice(now);
            self.size += now.len() as u64;
            rest = later;
            if self.buf.len() == self.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, BackupError> {
        self.check()?;
        if !self.buf.is_empty() {
            self.send_part().await?;
        }
        let Some(w) = self.inner.take() else {
            return Err(S3Error::Broken {
                path: self.path.clone(),
                target: self.target.described.to_string(),
            }
            .into());
        };
        // WriteMultipart::finish aborts the upload itself if a part or the
        // completion fails.
        w.finish()
            .await
            .map_err(|e| self.target.fail(Op::Finish, Some(&self.path), e))?;
        Ok(self.size)
    }

    async fn abort(mut self: Box<Self>) -> Result<(), BackupError> {
        match self.inner.take() {
            Some(w) => w
                .abort()
                .await
                .map_err(|e| self.target.fail(Op::Abort, Some(&self.path), e).into()),
            None => Ok(()),
        }
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Unfinished: abort in the background where a runtime runs;
        // without one, dropping the upload cancels its part tasks (and a
        // directory's staging file is removed by object_store).
        if let Some(w) = self.inner.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = w.abort().await;
            });
        }
    }
}

/// A download: object_store's stream of the object's bytes.
struct S3Reader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    path: ObjectPath,
    target: S3Target,
}

#[async_trait]
impl ObjectReader for S3Reader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BackupError> {
        match self.stream.next().await {
            None => Ok(None),
            Some(Ok(chunk)) => Ok(Some(chunk)),
            Some(Err(e)) => Err(self.target.fail(Op::Read, Some(&self.path), e).into()),
        }
    }
}
