//! [`MemBackupTarget`]: a backup target in memory.
//!
//! Keeps the contract of `echorelay_core::backup::target` exactly. Objects
//! live in one map behind a lock; clones share it. A conditional create
//! checks and inserts in one critical section. An upload works like an S3
//! multipart upload: the writer holds at most one part (the part size,
//! [`MemBackupTarget::with_part_size`], 64 KiB by default) and hands each
//! full part to a staging area of the target, which no `get` or `list`
//! sees; [`ObjectWriter::finish`] moves the parts into the map in one step,
//! and an abort or a drop discards them. So the writer's
//! [`BackupTarget::buffer_bound`] is one part, while the target itself, a
//! store in memory, holds every object whole (and the parts of unfinished
//! uploads, as an S3 server does).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use echorelay_core::backup::{
    BackupError, BackupTarget, ObjectMeta, ObjectPath, ObjectReader, ObjectWriter,
};

/// The default part size of a [`MemBackupTarget`]'s uploads: 64 KiB.
pub const DEFAULT_MEM_PART_SIZE: usize = 64 * 1024;

#[derive(Debug)]
struct Stored {
    /// The object's bytes, in the parts it was written in.
    parts: Arc<[Bytes]>,
    size: u64,
    modified: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<ObjectPath, Stored>,
    /// Unfinished uploads: their full parts so far, by upload id.
    staged: HashMap<u64, Vec<Bytes>>,
    next_upload: u64,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing in a critical section panics on input; recover from
        // poison rather than fail every later call.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A backup target in memory (see the module docs). `new()` is empty;
/// clones share the objects.
///
/// ```
/// use echorelay_store_mem::MemBackupTarget;
/// use echorelay_core::backup::{BackupTarget, ObjectPath};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let target = MemBackupTarget::new();
/// let path = ObjectPath::new("backups/1/manifest").unwrap();
/// target.create(&path, "hello".into()).await.unwrap();
/// assert!(target.create(&path, "again".into()).await.is_err());
/// # });
/// ```
#[derive(Clone)]
pub struct MemBackupTarget {
    shared: Arc<Shared>,
    part_size: usize,
    #[cfg(feature = "faults")]
    racy: bool,
}

impl Default for MemBackupTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemBackupTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemBackupTarget")
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl MemBackupTarget {
    /// An empty target with parts of [`DEFAULT_MEM_PART_SIZE`].
    pub fn new() -> Self {
        Self::with_part_size(DEFAULT_MEM_PART_SIZE)
    }

    /// An empty target whose writers hold parts of `part_size` bytes (at
    /// least 1; 0 is taken as 1).
    pub fn with_part_size(part_size: usize) -> Self {
        Self {
            shared: Arc::default(),
            part_size: part_size.max(1),
            #[cfg(feature = "faults")]
            racy: false,
        }
    }

    /// A target whose `create` checks under the lock, lets go of it,
    /// yields, then writes without checking again: a broken backend that
    /// the suite's race check must catch. Test builds only (feature
    /// `faults`).
    #[cfg(feature = "faults")]
    pub fn racy() -> Self {
        Self {
            racy: true,
            ..Self::new()
        }
    }
}

impl Stored {
    /// An object of `parts` (empty ones dropped), written now.
    fn new(mut parts: Vec<Bytes>) -> Self {
        parts.retain(|p| !p.is_empty());
        let size = parts.iter().map(|p| p.len() as u64).sum();
        Self {
            parts: parts.into(),
            size,
            modified: Utc::now(),
        }
    }
}

#[async_trait]
impl BackupTarget for MemBackupTarget {
    async fn create(&self, path: &ObjectPath, bytes: Bytes) -> Result<(), BackupError> {
        let stored = Stored::new(vec![bytes]);
        #[cfg(feature = "faults")]
        if self.racy {
            if self.shared.lock().objects.contains_key(path) {
                return Err(BackupError::AlreadyExists(path.clone()));
            }
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            self.shared.lock().objects.insert(path.clone(), stored);
            return Ok(());
        }
        let mut s = self.shared.lock();
        if s.objects.contains_key(path) {
            return Err(BackupError::AlreadyExists(path.clone()));
        }
        s.objects.insert(path.clone(), stored);
        Ok(())
    }

    async fn upload(&self, path: &ObjectPath) -> Result<Box<dyn ObjectWriter>, BackupError> {
        let id = {
            let mut s = self.shared.lock();
            let id = s.next_upload;
            s.next_upload += 1;
            s.staged.insert(id, Vec::new());
            id
        };
        Ok(Box::new(MemWriter {
            target: self.clone(),
            path: path.clone(),
            id,
            current: Vec::new(),
            done: false,
        }))
    }

    async fn get(&self, path: &ObjectPath) -> Result<Box<dyn ObjectReader>, BackupError> {
        let s = self.shared.lock();
        let stored = s
            .objects
            .get(path)
            .ok_or_else(|| BackupError::NotFound(path.clone()))?;
        Ok(Box::new(MemReader {
            parts: stored.parts.clone(),
            next: 0,
        }))
    }

    async fn list(&self, prefix: Option<&ObjectPath>) -> Result<Vec<ObjectMeta>, BackupError> {
        let s = self.shared.lock();
        let from = prefix.map_or("", ObjectPath::as_str);
        // Paths under `p` start with `p`'s text, so they sort from `p` on;
        // the walk stops at the first path that does not start with it.
        Ok(s.objects
            .iter()
            .skip_while(|(p, _)| p.as_str() < from)
            .take_while(|(p, _)| p.as_str().starts_with(from))
            .filter(|(p, _)| prefix.is_none_or(|pre| p.is_under(pre)))
            .map(|(p, o)| ObjectMeta {
                path: p.clone(),
                size: o.size,
                last_modified: Some(o.modified),
            })
            .collect())
    }

    async fn delete(&self, path: &ObjectPath) -> Result<(), BackupError> {
        self.shared.lock().objects.remove(path);
        Ok(())
    }

    fn buffer_bound(&self) -> usize {
        self.part_size
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

/// An upload in progress: the current part, and its full parts staged in
/// the target under `id`.
struct MemWriter {
    target: MemBackupTarget,
    path: ObjectPath,
    id: u64,
    current: Vec<u8>,
    done: bool,
}

impl MemWriter {
    fn stage(&mut self) -> Result<(), BackupError> {
        let part = Bytes::from(std::mem::take(&mut self.current));
        let mut s = self.target.shared.lock();
        match s.staged.get_mut(&self.id) {
            Some(parts) => {
                parts.push(part);
                Ok(())
            }
            None => Err(BackupError::Unavailable(format!(
                "the upload to {} is no longer staged",
                self.path
            ))),
        }
    }
}

#[async_trait]
impl ObjectWriter for MemWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BackupError> {
        let part_size = self.target.part_size;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            if self.current.capacity() == 0 {
                self.current.reserve_exact(part_size);
            }
            let room = part_size - self.current.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.current.extend_from_slice(now);
            rest = later;
            if self.current.len() == part_size {
                self.stage()?;
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, BackupError> {
        if !self.current.is_empty() {
            self.stage()?;
        }
        self.done = true;
        let mut s = self.target.shared.lock();
        let parts = s.staged.remove(&self.id).ok_or_else(|| {
            BackupError::Unavailable(format!("the upload to {} is no longer staged", self.path))
        })?;
        let stored = Stored::new(parts);
        let size = stored.size;
        s.objects.insert(self.path.clone(), stored);
        Ok(size)
    }

    async fn abort(mut self: Box<Self>) -> Result<(), BackupError> {
        self.done = true;
        self.target.shared.lock().staged.remove(&self.id);
        Ok(())
    }
}

impl Drop for MemWriter {
    fn drop(&mut self) {
        if !self.done {
            self.target.shared.lock().staged.remove(&self.id);
        }
    }
}

/// A download: the object's parts (shared with the map, not copied).
struct MemReader {
    parts: Arc<[Bytes]>,
    next: usize,
}

#[async_trait]
impl ObjectReader for MemReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BackupError> {
        let chunk = self.parts.get(self.next).cloned();
        self.next += 1;
        Ok(chunk)
    }
}
