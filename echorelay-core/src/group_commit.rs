//! Group commit for the delivery log: concurrent writers of one kind of
//! record share one store call (one statement, one commit) instead of one
//! each.
//!
//! Every writer hands its record to a [`GroupCommit`] and waits for its own
//! result, exactly as if it had called the store itself. One task per
//! `GroupCommit` takes whatever records are waiting (at most
//! [`GroupCommit::max`]), writes them with one call of the batch function
//! and answers each writer with its record's own result. While a batch is
//! being written the next one gathers, so the batch size follows the load:
//! a lone writer gets a batch of one and waits no longer than before, and
//! under load a commit serves everyone who arrived during the previous one.
//! Nothing is held back on a timer.
//!
//! Failures stay per record: the batch function answers each record (one
//! taken id refuses that message only); a failure of the whole call (the
//! database unreachable) is every writer's error. A writer that stops
//! waiting (its request was cancelled) does not cancel the write, just as
//! a cancelled request could not take back a statement already sent.
//!
//! The task is started on first use, on the runtime of that use, and
//! started again if that runtime has gone away since (a service kept
//! across runtimes, as tests do); it ends when the `GroupCommit` is
//! dropped.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::ports::StoreResult;

/// What a batch function returns: the whole call's failure, or one result
/// per record, in the records' order.
pub(crate) type BatchResult = StoreResult<Vec<StoreResult<()>>>;

type BatchFuture = Pin<Box<dyn Future<Output = BatchResult> + Send>>;
type BatchFn<I> = Arc<dyn Fn(Vec<I>) -> BatchFuture + Send + Sync>;
type Waiting<I> = (I, oneshot::Sender<StoreResult<()>>);

/// See the module docs.
pub(crate) struct GroupCommit<I> {
    write: BatchFn<I>,
    max: usize,
    sender: Mutex<Option<mpsc::Sender<Waiting<I>>>>,
}

impl<I> fmt::Debug for GroupCommit<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCommit")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// The error every writer of a batch gets when the whole call failed: the
/// store's error, shared.
#[derive(Debug, Clone)]
struct Shared(Arc<StoreError>);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the delivery log's writer stopped before answering")]
struct WriterGone;

impl<I: Send + 'static> GroupCommit<I> {
    /// Batches of at most `max` (at least 1) records, written by `write`.
    pub(crate) fn new<F, Fut>(max: usize, write: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = BatchResult> + Send + 'static,
    {
        Self {
            write: Arc::new(move |batch| Box::pin(write(batch))),
            max: max.max(1),
            sender: Mutex::new(None),
        }
    }

    /// Writes `item` in the next batch and returns its own result.
    pub(crate) async fn write(&self, item: I) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        let mut waiting = (item, reply);
        // Twice at most: a sender whose task is gone (its runtime ended)
        // is replaced once.
        for _ in 0..2 {
            let sender = self.sender()?;
            match sender.send(waiting).await {
                Ok(()) => {
                    return answer
                        .await
                        .unwrap_or_else(|_| Err(StoreError::backend(WriterGone)));
                }
                Err(mpsc::error::SendError(back)) => {
                    waiting = back;
                    if let Ok(mut s) = self.sender.lock()
                        && s.as_ref().is_some_and(|s| s.same_channel(&sender))
                    {
                        *s = None;
                    }
                }
            }
        }
        Err(StoreError::backend(WriterGone))
    }

    fn sender(&self) -> StoreResult<mpsc::Sender<Waiting<I>>> {
        let mut s = self
            .sender
            .lock()
            .map_err(|_| StoreError::backend(WriterGone))?;
        if let Some(tx) = s.as_ref() {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel(self.max * 4);
        tokio::spawn(run(rx, self.write.clone(), self.max));
        *s = Some(tx.clone());
        Ok(tx)
    }
}

async fn run<I>(mut rx: mpsc::Receiver<Waiting<I>>, write: BatchFn<I>, max: usize) {
    let mut waiting = Vec::with_capacity(max);
    while rx.recv_many(&mut waiting, max).await > 0 {
        let (items, replies): (Vec<I>, Vec<_>) = waiting.drain(..).unzip();
        let n = replies.len();
        match write(items).await {
            Ok(results) if results.len() == n => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Ok(results) => {
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Corrupt {
                        table: "delivery log",
                        id: String::new(),
                        problem: format!("{} results for a batch of {n}", results.len()),
                    }));
                }
            }
            Err(e) => {
                let e = Shared(Arc::new(e));
                for reply in replies {
                    let _ = reply.send(Err(StoreError::backend(e.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A batch function that records each batch's size, waits on `gate`
    /// before answering, and refuses the record `7` ("taken").
    fn recording(
        sizes: Arc<Mutex<Vec<usize>>>,
        gate: Arc<tokio::sync::Semaphore>,
    ) -> impl Fn(Vec<u32>) -> BatchFuture + Send + Sync + 'static {
        move |batch: Vec<u32>| {
            let sizes = sizes.clone();
            let gate = gate.clone();
            Box::pin(async move {
                sizes.lock().unwrap().push(batch.len());
                gate.acquire().await.unwrap().forget();
                Ok(batch
                    .into_iter()
                    .map(|i| {
                        if i == 7 {
                            Err(StoreError::AlreadyExists { kind: "message" })
                        } else {
                            Ok(())
                        }
                    })
                    .collect())
            }) as BatchFuture
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_that_arrive_during_a_commit_share_the_next_one() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = Arc::new(GroupCommit::new(64, recording(sizes.clone(), gate.clone())));
        // The first write holds the writer (its commit waits on the gate).
        let first = tokio::spawn({
            let g = g.clone();
            async move { g.write(1).await }
        });
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Ten more arrive while it is committing, record 7 among them.
        let rest: Vec<_> = (2..12)
            .map(|i| {
                let g = g.clone();
                tokio::spawn(async move { (i, g.write(i).await) })
            })
            .collect();
        // Let them all reach the channel before the first commit ends.
        while g.sender.lock().unwrap().as_ref().unwrap().capacity() > 64 * 4 - 10 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(2);
        assert!(first.await.unwrap().is_ok());
        for r in rest {
            let (i, result) = r.await.unwrap();
            if i == 7 {
                assert!(
                    matches!(result, Err(StoreError::AlreadyExists { .. })),
                    "{result:?}"
                );
            } else {
                assert!(result.is_ok(), "{i}: {result:?}");
            }
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 10]);
    }

    #[tokio::test]
    async fn a_batch_holds_at_most_max_records() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(1000));
        let g = Arc::new(GroupCommit::new(3, recording(sizes.clone(), gate.clone())));
        // Queued before the writer task first runs (current-thread
        // runtime): 8 records in batches of 3, 3 and 2.
        write_all(&g, 10..18).await;
        assert_eq!(*sizes.lock().unwrap(), vec![3, 3, 2]);
        // A max of 0 is taken as 1.
        sizes.lock().unwrap().clear();
        let g = Arc::new(GroupCommit::new(0, recording(sizes.clone(), gate)));
        write_all(&g, 10..12).await;
        assert_eq!(*sizes.lock().unwrap(), vec![1, 1]);
    }

    async fn write_all(g: &Arc<GroupCommit<u32>>, records: std::ops::Range<u32>) {
        let writes: Vec<_> = records
            .map(|i| {
                let g = g.clone();
                tokio::spawn(async move { g.write(i).await })
            })
            .collect();
        for w in writes {
            w.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_failed_call_is_every_writers_error_and_a_short_answer_too() {
        let calls = Arc::new(AtomicUsize::new(0));
        let g = Arc::new(GroupCommit::new(8, {
            let calls = calls.clone();
            move |batch: Vec<u32>| {
                let call = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if call == 0 {
                        Err(StoreError::backend(std::io::Error::other("down")))
                    } else {
                        // One result too few.
                        Ok((1..batch.len()).map(|_| Ok(())).collect())
                    }
                }
            }
        }));
        for round in 0..2 {
            let writes: Vec<_> = (0..3)
                .map(|i| {
                    let g = g.clone();
                    tokio::spawn(async move { g.write(i).await })
                })
                .collect();
            for w in writes {
                let r = w.await.unwrap();
                match round {
                    0 => {
                        let Err(StoreError::Backend { source }) = &r else {
                            panic!("{r:?}")
                        };
                        assert_eq!(source.to_string(), "storage backend failed");
                        assert!(source.source().is_some());
                    }
                    _ => assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}"),
                }
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one call per round");
    }

    #[test]
    fn a_writer_outlives_the_runtime_it_started_on() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(1000));
        let g = GroupCommit::new(8, recording(sizes.clone(), gate));
        for _ in 0..2 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async { g.write(1).await.unwrap() });
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 1]);
    }

    #[tokio::test]
    async fn a_writer_that_stops_waiting_does_not_cancel_its_write() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = Arc::new(GroupCommit::new(8, recording(sizes.clone(), gate.clone())));
        let gone = tokio::spawn({
            let g = g.clone();
            async move { g.write(1).await }
        });
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        gone.abort();
        gate.add_permits(2);
        g.write(2).await.unwrap();
        assert_eq!(*sizes.lock().unwrap(), vec![1, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_task_ends_when_the_group_commit_is_dropped() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(1000));
        let g = GroupCommit::new(8, recording(sizes.clone(), gate.clone()));
        g.write(1).await.unwrap();
        // The task holds the batch function, and with it `gate` and `sizes`.
        assert_eq!(Arc::strong_count(&sizes), 2);
        drop(g);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&sizes) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(Arc::strong_count(&sizes), 1, "the task ended");
        assert_eq!(*sizes.lock().unwrap(), vec![1], "and wrote no empty batch");
    }

    #[test]
    fn debug_shows_the_batch_limit_only() {
        let g = GroupCommit::new(
            5,
            recording(
                Arc::new(Mutex::new(Vec::new())),
                Arc::new(tokio::sync::Semaphore::new(0)),
            ),
        );
        assert_eq!(format!("{g:?}"), "GroupCommit { max: 5, .. }");
    }
}
