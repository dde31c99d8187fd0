//! Encryption of backup objects in the age format (S12): every object is
//! an age file (age-encryption.org/v1) to the configured X25519
//! recipients, so the process that makes backups holds public keys only,
//! and an operator decrypts any object with the standard `age` tool
//! (`age -d -i identity.txt object.age`).
//!
//! [`SealedWriter`] encrypts a stream chunk by chunk into an
//! [`ObjectWriter`], hashing the ciphertext as it goes (the manifest
//! records the SHA-256 of every object as stored). [`open_object`]
//! streams an object back, checks its size and SHA-256 against what the
//! manifest says, and decrypts it (age authenticates every 64 KiB chunk
//! and the end of the stream, so a truncated or altered object fails).

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::target::{BackupError, BackupTarget, ObjectPath, ObjectWriter};

/// The most recipients a backup may name.
pub const MAX_RECIPIENTS: usize = 32;

/// The X25519 recipients backups are encrypted to (`age1…`), as
/// `ECHORELAY_BACKUP_RECIPIENTS` lists them (separated by commas or
/// whitespace). Public keys only: they cannot decrypt.
#[derive(Clone)]
pub struct Recipients(Vec<age::x25519::Recipient>);

impl Recipients {
    /// Parses a list; at least one, at most [`MAX_RECIPIENTS`], each an
    /// X25519 `age1…` recipient.
    pub fn parse(list: &str) -> Result<Self, BackupError> {
        let mut out = Vec::new();
        for (i, item) in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let r = age::x25519::Recipient::from_str(item).map_err(|_| {
                BackupError::Recipients(format!(
                    "recipient {} is not an X25519 age recipient (age1…)",
                    i + 1
                ))
            })?;
            out.push(r);
        }
        if out.is_empty() {
            return Err(BackupError::Recipients(
                "no recipient: set ECHORELAY_BACKUP_RECIPIENTS to one or more age1… keys".into(),
            ));
        }
        if out.len() > MAX_RECIPIENTS {
            return Err(BackupError::Recipients(format!(
                "more than {MAX_RECIPIENTS} recipients"
            )));
        }
        Ok(Self(out))
    }

    /// Each recipient's fingerprint: the lowercase hex SHA-256 of its
    /// `age1…` text, in the order given.
    pub fn fingerprints(&self) -> Vec<String> {
        self.0.iter().map(|r| fingerprint(&r.to_string())).collect()
    }

    fn as_dyn(&self) -> impl Iterator<Item = &dyn age::Recipient> {
        self.0.iter().map(|r| r as &dyn age::Recipient)
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Recipients")
            .field(&self.fingerprints())
            .finish()
    }
}

/// The fingerprint of an `age1…` recipient: lowercase hex SHA-256 of its
/// text.
pub fn fingerprint(recipient: &str) -> String {
    hex::encode(Sha256::digest(recipient.as_bytes()))
}

/// The X25519 identities that decrypt backups (`AGE-SECRET-KEY-1…`), read
/// from an age identity file: one per line, `#` comments and blank lines
/// ignored. Held only by whoever restores; never logged (`Debug` shows the
/// fingerprints of their recipients).
pub struct Identities(Vec<age::x25519::Identity>);

impl Identities {
    /// Parses the text of an identity file.
    pub fn parse(text: &str) -> Result<Self, BackupError> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = age::x25519::Identity::from_str(line).map_err(|_| {
                BackupError::Identity(format!(
                    "line {} is not an X25519 age identity (AGE-SECRET-KEY-1…)",
                    n + 1
                ))
            })?;
            out.push(id);
        }
        if out.is_empty() {
            return Err(BackupError::Identity(
                "the identity file holds no identity".into(),
            ));
        }
        Ok(Self(out))
    }

    /// The fingerprints of the recipients these identities decrypt for.
    pub fn fingerprints(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|i| fingerprint(&i.to_public().to_string()))
            .collect()
    }

    fn as_dyn(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.0.iter().map(|i| i as &dyn age::Identity)
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Identities")
            .field(&self.fingerprints())
            .finish()
    }
}

/// Encrypts `plaintext` to `recipients` in one piece (small objects: the
/// manifest).
pub fn encrypt_small(recipients: &Recipients, plaintext: &[u8]) -> Result<Vec<u8>, BackupError> {
    let enc = age::Encryptor::with_recipients(recipients.as_dyn())
        .map_err(|e| BackupError::Encryption(e.to_string()))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut w = enc
        .wrap_output(&mut out)
        .map_err(|e| BackupError::Encryption(e.to_string()))?;
    w.write_all(plaintext)
        .and_then(|()| w.finish().map(|_| ()))
        .map_err(|e| BackupError::Encryption(e.to_string()))?;
    Ok(out)
}

/// Decrypts a small age file (the manifest) whole, reading at most
/// `limit` plaintext bytes.
pub fn decrypt_small(
    identities: &Identities,
    ciphertext: &[u8],
    limit: usize,
    path: &ObjectPath,
) -> Result<Vec<u8>, BackupError> {
    let dec = age::Decryptor::new(ciphertext).map_err(|e| decrypt_error(path, &e))?;
    let mut r = dec
        .decrypt(identities.as_dyn())
        .map_err(|e| decrypt_error(path, &e))?;
    let mut out = Vec::new();
    let read = r
        .by_ref()
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BackupError::corrupt(path, &format!("does not decrypt: {}", io_kind(&e))))?;
    if read > limit {
        return Err(BackupError::corrupt(
            path,
            &format!("is larger than {limit} bytes"),
        ));
    }
    Ok(out)
}

fn decrypt_error(path: &ObjectPath, e: &age::DecryptError) -> BackupError {
    match e {
        age::DecryptError::NoMatchingKeys => BackupError::WrongIdentity(path.clone()),
        _ => BackupError::corrupt(path, "is not a valid age file or fails authentication"),
    }
}

fn io_kind(e: &io::Error) -> String {
    // age reports a failed chunk as InvalidData; no content is echoed.
    format!("{:?}", e.kind())
}

/// A `Write` into a buffer shared with the async side, which drains it
/// into the upload after every write.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn take(&self) -> Vec<u8> {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *g)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a finished [`SealedWriter`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// Bytes stored (the age file).
    pub size: u64,
    /// SHA-256 of the bytes stored.
    pub sha256: [u8; 32],
    /// Plaintext bytes encrypted.
    pub plaintext_size: u64,
}

/// Encrypts a stream to the recipients and uploads the ciphertext; see
/// the module docs. Memory held: age's 64 KiB chunk plus what the
/// target's writer holds ([`BackupTarget::buffer_bound`]).
pub struct SealedWriter {
    age: Option<age::stream::StreamWriter<Shared>>,
    out: Shared,
    upload: Option<Box<dyn ObjectWriter>>,
    hash: Sha256,
    size: u64,
    plaintext_size: u64,
}

impl fmt::Debug for SealedWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedWriter")
            .field("size", &self.size)
            .field("plaintext_size", &self.plaintext_size)
            .finish_non_exhaustive()
    }
}

impl SealedWriter {
    /// Starts an encrypted upload of a new object at `path`.
    pub async fn start(
        target: &dyn BackupTarget,
        path: &ObjectPath,
        recipients: &Recipients,
    ) -> Result<Self, BackupError> {
        let enc = age::Encryptor::with_recipients(recipients.as_dyn())
            .map_err(|e| BackupError::Encryption(e.to_string()))?;
        let out = Shared::default();
        let age = enc
            .wrap_output(out.clone())
            .map_err(|e| BackupError::Encryption(e.to_string()))?;
        let upload = target.upload(path).await?;
        let mut w = Self {
            age: Some(age),
            out,
            upload: Some(upload),
            hash: Sha256::new(),
            size: 0,
            plaintext_size: 0,
        };
        // The header is written now: ship it.
        w.drain().await?;
        Ok(w)
    }

    async fn drain(&mut self) -> Result<(), BackupError> {
        let chunk = self.out.take();
        if chunk.is_empty() {
            return Ok(());
        }
        self.hash.update(&chunk);
        self.size += chunk.len() as u64;
        match self.upload.as_mut() {
            Some(u) => u.write(Bytes::from(chunk)).await,
            None => Err(BackupError::Encryption("writer already finished".into())),
        }
    }

    /// Encrypts and uploads `plaintext`.
    pub async fn write(&mut self, plaintext: &[u8]) -> Result<(), BackupError> {
        let age = self
            .age
            .as_mut()
            .ok_or_else(|| BackupError::Encryption("writer already finished".into()))?;
        age.write_all(plaintext)
            .map_err(|e| BackupError::Encryption(e.to_string()))?;
        self.plaintext_size += plaintext.len() as u64;
        self.drain().await
    }

    /// Ends the age stream and completes the object.
    pub async fn finish(mut self) -> Result<Sealed, BackupError> {
        let age = self
            .age
            .take()
            .ok_or_else(|| BackupError::Encryption("writer already finished".into()))?;
        age.finish()
            .map_err(|e| BackupError::Encryption(e.to_string()))?;
        self.drain().await?;
        let upload = self
            .upload
            .take()
            .ok_or_else(|| BackupError::Encryption("writer already finished".into()))?;
        let stored = upload.finish().await?;
        if stored != self.size {
            return Err(BackupError::Unavailable(format!(
                "the target stored {stored} bytes of {}",
                self.size
            )));
        }
        Ok(Sealed {
            size: self.size,
            sha256: self.hash.clone().finalize().into(),
            plaintext_size: self.plaintext_size,
        })
    }

    /// Abandons the object: nothing becomes visible.
    pub async fn abort(mut self) -> Result<(), BackupError> {
        match self.upload.take() {
            Some(u) => u.abort().await,
            None => Ok(()),
        }
    }
}

/// What the manifest says of an object: checked while it streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of the bytes stored.
    pub sha256: [u8; 32],
    /// Plaintext bytes.
    pub plaintext_size: u64,
}

/// A `Read` over ciphertext chunks sent from the async side.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Plaintext of an object as it decrypts: chunks in order. The last item
/// is an error if the object does not match what the manifest says, is
/// truncated, or fails authentication; a consumer must treat everything
/// it received as unverified until the stream ends with `None`. The final
/// chunk is released only after the object's size and SHA-256 matched the
/// manifest and age authenticated its end, so a consumer never sees the
/// whole of an object that does not verify.
pub type PlaintextChunks = mpsc::Receiver<Result<Bytes, BackupError>>;

/// Streams the object at `path`, checks its size and SHA-256 against
/// `expected` and decrypts it with `identities` (see [`PlaintextChunks`]).
pub async fn open_object(
    target: Arc<dyn BackupTarget>,
    path: ObjectPath,
    identities: Arc<Identities>,
    expected: Expected,
) -> Result<PlaintextChunks, BackupError> {
    let mut reader = target.get(&path).await?;
    let (ct_tx, ct_rx) = mpsc::channel::<Bytes>(4);
    let (pt_tx, pt_rx) = mpsc::channel::<Result<Bytes, BackupError>>(4);

    // Download: hash and count the ciphertext, feed the decryptor.
    let dl_path = path.clone();
    let download = tokio::spawn(async move {
        let mut hash = Sha256::new();
        let mut size = 0u64;
        loop {
            match reader.next_chunk().await {
                Ok(Some(chunk)) => {
                    size += chunk.len() as u64;
                    if size > expected.size {
                        return Err(BackupError::corrupt(
                            &dl_path,
                            "is longer than its manifest says",
                        ));
                    }
                    hash.update(&chunk);
                    // Waits for the decryptor: memory stays at a few
                    // chunks.
                    if ct_tx.send(chunk).await.is_err() {
                        // The decryptor stopped (it reports why).
                        return Ok(());
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(e),
            }
        }
        drop(ct_tx);
        if size != expected.size {
            return Err(BackupError::corrupt(
                &dl_path,
                "is shorter than its manifest says",
            ));
        }
        let digest: [u8; 32] = hash.finalize().into();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &digest[..],
            &expected.sha256[..],
        )) {
            return Err(BackupError::corrupt(
                &dl_path,
                "does not match its SHA-256 in the manifest",
            ));
        }
        Ok(())
    });

    // Decrypt on a blocking thread.
    let dec_path = path.clone();
    let decrypt = tokio::task::spawn_blocking(move || -> Result<u64, BackupError> {
        let input = ChannelReader {
            rx: ct_rx,
            cur: Bytes::new(),
        };
        let dec = age::Decryptor::new_buffered(io::BufReader::new(input))
            .map_err(|e| decrypt_error(&dec_path, &e))?;
        let mut r = dec
            .decrypt(identities.as_dyn())
            .map_err(|e| decrypt_error(&dec_path, &e))?;
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).map_err(|_| {
                BackupError::corrupt(&dec_path, "fails authentication or is truncated")
            })?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > expected.plaintext_size {
                return Err(BackupError::corrupt(
                    &dec_path,
                    "decrypts to more than its manifest says",
                ));
            }
            if pt_tx
                .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                .is_err()
            {
                return Ok(total); // the consumer went away
            }
        }
        if total != expected.plaintext_size {
            return Err(BackupError::corrupt(
                &dec_path,
                "decrypts to fewer bytes than its manifest says",
            ));
        }
        Ok(total)
    });

    // Report: the first failure of either side ends the stream.
    let (tx, rx) = mpsc::channel::<Result<Bytes, BackupError>>(4);
    tokio::spawn(async move {
        let mut pt_rx = pt_rx;
        // The newest chunk is held back until the next one arrives or the
        // whole object has checked out: a consumer never receives the end
        // of an object that does not match its manifest (a restore tool
        // cannot finish, and commit, on a swapped object).
        let mut held: Option<Bytes> = None;
        while let Some(item) = pt_rx.recv().await {
            let out = match item {
                Ok(b) => match held.replace(b) {
                    Some(prev) => Ok(prev),
                    None => continue,
                },
                Err(e) => Err(e),
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
        let dl = download
            .await
            .unwrap_or_else(|_| Err(BackupError::Unavailable("download task failed".into())));
        let dec = decrypt
            .await
            .unwrap_or_else(|_| Err(BackupError::Unavailable("decrypt task failed".into())));
        // A hash mismatch explains a decryption failure better than the
        // other way round: report the download's error first.
        let outcome = match (dl, dec) {
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(_)) => Ok(()),
        };
        match outcome {
            Ok(()) => {
                if let Some(last) = held {
                    let _ = tx.send(Ok(last)).await;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
        }
    });
    Ok(rx)
}
