//! The backup benchmark's ceiling (BENCHMARKS.md, issue 18): a plain
//! multipart upload or download of bytes through the same target and the
//! same object_store client a backup uses, with no encryption, hashing or
//! read-back. Also the by-hand pipe's transport (`pg_dump | age | transfer
//! put URL PATH -`).
//!
//! ```sh
//! cargo run --release -p echorelay-store-s3 --example transfer -- put s3://bucket/prefix some/path FILE|-
//! cargo run --release -p echorelay-store-s3 --example transfer -- get s3://bucket/prefix some/path > out
//! cargo run --release -p echorelay-store-s3 --example transfer -- rm  s3://bucket/prefix some/path
//! ```
//!
//! Prints `BYTES SECONDS` on stderr when done.
#![allow(clippy::print_stderr)]

use std::io::Write;
use std::time::Instant;

use bytes::Bytes;
use echorelay_core::backup::{BackupTarget, ObjectPath};
use echorelay_store_s3::S3Target;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [verb, url, path, rest @ ..] = args.as_slice() else {
        return Err("usage: transfer put|get|rm URL PATH [FILE|-]".into());
    };
    let target = S3Target::from_url(url)?;
    let path = ObjectPath::new(path)?;
    let start = Instant::now();
    let mut n = 0u64;
    match verb.as_str() {
        "put" => {
            let mut input: Box<dyn tokio::io::AsyncRead + Unpin> =
                match rest.first().map(String::as_str) {
                    None | Some("-") => Box::new(tokio::io::stdin()),
                    Some(file) => Box::new(tokio::fs::File::open(file).await?),
                };
            let mut w = target.upload(&path).await?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let k = input.read(&mut buf).await?;
                if k == 0 {
                    break;
                }
                n += k as u64;
                w.write(Bytes::copy_from_slice(&buf[..k])).await?;
            }
            w.finish().await?;
        }
        "get" => {
            let mut r = target.get(&path).await?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = r.next_chunk().await? {
                n += chunk.len() as u64;
                out.write_all(&chunk)?;
            }
            out.flush()?;
        }
        "rm" => target.delete(&path).await?,
        other => return Err(format!("unknown verb {other:?}").into()),
    }
    eprintln!("{n} {:.3}", start.elapsed().as_secs_f64());
    Ok(())
}
