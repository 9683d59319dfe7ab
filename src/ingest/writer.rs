//! Group commit: reports from concurrent requests are gathered into batches
//! and written by one set-based statement per batch, so a burst costs one
//! commit per batch instead of one per report. Every request is answered
//! only after the transaction holding its report commits.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio::time::Instant;

use super::batch::{Job, WriteError, write_batch};
use super::reply::Reply;
use crate::config::IngestConfig;
use crate::db::announcer::Announcer;
use crate::db::reports::{Incoming, Recorded};

#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    /// A batch's worth of reports queued: a writer waiting for another
    /// writer's batch to be written takes them now (see [`write_batches`]).
    full: Arc<Notify>,
    batch_max: usize,
    stats: Arc<Stats>,
}

/// Counters of what the writers did, for benchmarks and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub batches: AtomicU64,
    pub reports: AtomicU64,
}

impl Writer {
    /// Starts `cfg.writers` tasks on the current runtime. They stop when the
    /// last `Writer` is dropped, after writing what was queued. A batch whose
    /// statement and commit have not answered within `deadline` is given up
    /// (see [`write_batch`]).
    pub fn start(
        pool: PgPool,
        announcer: Announcer,
        cfg: &IngestConfig,
        deadline: Duration,
    ) -> Writer {
        let (queue, receiver) = mpsc::channel(cfg.queue_capacity.get());
        let receiver = Arc::new(Mutex::new(receiver));
        let stats = Arc::new(Stats::default());
        let writing = Arc::new(watch::Sender::new(0));
        let full = Arc::new(Notify::new());
        for _ in 0..cfg.writers.get() {
            let shared = Shared {
                receiver: receiver.clone(),
                writing: writing.clone(),
                full: full.clone(),
                stats: stats.clone(),
                announcer: announcer.clone(),
            };
            let limits = Limits {
                batch_max: cfg.batch_max.get(),
                batch_wait: cfg.batch_wait,
                writer_wait: cfg.writer_wait,
                deadline,
            };
            tokio::spawn(write_batches(shared, pool.clone(), limits));
        }
        Writer {
            queue,
            full,
            batch_max: cfg.batch_max.get(),
            stats,
        }
    }

    /// The count of reports written so far, readable from anywhere: it
    /// grows while callbacks come in (an export yields to them).
    pub fn reports_written(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let stats = self.stats.clone();
        move || stats.reports.load(Ordering::Relaxed)
    }

    /// Batches and reports written so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.stats.batches.load(Ordering::Relaxed),
            self.stats.reports.load(Ordering::Relaxed),
        )
    }

    /// Queues a report and waits until it is committed (`Some`) or refused
    /// as a conflict (`None`).
    pub async fn write(&self, incoming: Incoming) -> Result<Option<Recorded>, WriteError> {
        let (reply, answer) = Reply::new();
        let stopped = || WriteError::Unavailable("the writer has stopped".into());
        self.queue
            .send(Job {
                incoming,
                reply,
                span: tracing::Span::current(),
            })
            .await
            .map_err(|_| stopped())?;
        if self.queue.max_capacity() - self.queue.capacity() >= self.batch_max {
            self.full.notify_one();
        }
        answer.await.map_err(|_| stopped())?
    }
}

#[derive(Clone, Copy)]
struct Limits {
    batch_max: usize,
    batch_wait: Duration,
    writer_wait: Duration,
    deadline: Duration,
}

/// What the writers of one instance share.
struct Shared {
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    /// How many batches are being written now.
    writing: Arc<watch::Sender<usize>>,
    /// Told when a whole batch has queued.
    full: Arc<Notify>,
    stats: Arc<Stats>,
    /// Told of each batch's channels after its write.
    announcer: Announcer,
}

/// One writer: forms a batch while holding the queue, then writes it while
/// the next writer forms the next batch.
///
/// While another batch is being written, the batch in formation waits
/// until that write ends, a whole batch has queued or `writer_wait` has
/// passed, instead of leaving with what has queued so far: batches then
/// grow with the load rather than splitting it between the writers. A
/// statement costs PostgreSQL a fixed share of CPU whatever its size, so one
/// batch of 64 reports costs less per report than two batches of 32 written
/// side by side (docs/performance.md). A full batch leaves at once, so
/// beyond what one statement at a time can take the writers still write
/// side by side; and a write held up (by a row lock, a slow commit) holds
/// the next batch for `writer_wait` at most.
async fn write_batches(shared: Shared, pool: PgPool, limits: Limits) {
    let Shared {
        receiver,
        writing,
        full,
        stats,
        announcer,
    } = shared;
    let mut others_writing = writing.subscribe();
    let batch_max = limits.batch_max;
    // Repeats of a message already in the batch wait for the next one: a
    // statement may touch each row once, and they keep their arrival order.
    let mut deferred: VecDeque<Job> = VecDeque::new();
    loop {
        let mut batch = Vec::new();
        let mut keys = HashSet::new();
        let mut add = |job: Job, batch: &mut Vec<Job>, later: &mut VecDeque<Job>| {
            if batch.len() < batch_max && keys.insert(job.key()) {
                batch.push(job);
            } else {
                later.push_back(job);
            }
        };
        let mut still_deferred = VecDeque::new();
        for job in deferred.drain(..) {
            add(job, &mut batch, &mut still_deferred);
        }
        deferred = still_deferred;
        // With deferred reports in hand, never wait for the queue: another
        // writer may be holding it while waiting for new reports.
        let queue = if batch.is_empty() {
            Some(receiver.lock().await)
        } else {
            receiver.try_lock().ok()
        };
        if let Some(mut queue) = queue {
            if batch.is_empty() {
                match queue.recv().await {
                    Some(job) => add(job, &mut batch, &mut deferred),
                    None => return,
                }
            }
            let deadline = Instant::now() + limits.batch_wait;
            let mut waited_for_writer = None;
            loop {
                // What has queued.
                let mut closed = false;
                while batch.len() < batch_max {
                    match queue.try_recv() {
                        Ok(job) => add(job, &mut batch, &mut deferred),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                if closed || batch.len() >= batch_max {
                    break;
                }
                if Instant::now() < deadline {
                    match tokio::time::timeout_at(deadline, queue.recv()).await {
                        Ok(Some(job)) => add(job, &mut batch, &mut deferred),
                        Ok(None) => break,
                        Err(_) => {}
                    }
                    continue;
                }
                let waited_enough = waited_for_writer.is_some_and(|t| Instant::now() >= t);
                if waited_enough || *others_writing.borrow_and_update() == 0 {
                    break;
                }
                let until =
                    *waited_for_writer.get_or_insert_with(|| Instant::now() + limits.writer_wait);
                // Not woken by each report that queues meanwhile: a wake-up
                // per report costs more than the batching saves.
                tokio::select! {
                    _ = others_writing.wait_for(|n| *n == 0) => {}
                    () = full.notified() => {}
                    () = tokio::time::sleep_until(until) => {}
                }
            }
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .reports
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let _writing = Writing::start(&writing);
        write_batch(&pool, &announcer, batch, limits.deadline).await;
    }
}

/// Counts a batch as being written until dropped, whatever ends its write.
struct Writing<'a>(&'a watch::Sender<usize>);

impl<'a> Writing<'a> {
    fn start(writing: &'a watch::Sender<usize>) -> Self {
        writing.send_modify(|n| *n += 1);
        Writing(writing)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}
