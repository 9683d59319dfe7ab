//! The argon2 thread pool: verifications run on `auth.max_concurrent_verifications`
//! threads of their own, one at a time each. That bounds how many run at
//! once and the memory they take (each reuses one 19 MiB block, see
//! password::Verifier), and a flood of wrong passwords queues here instead
//! of occupying the async workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use secrecy::{ExposeSecret, SecretSlice};
use tokio::sync::oneshot;

use super::password;

pub struct Pool {
    jobs: mpsc::Sender<Job>,
    verifications: AtomicU64,
}

struct Job {
    hash: Arc<str>,
    presented: SecretSlice<u8>,
    reply: oneshot::Sender<bool>,
    /// The asking request's span, entered on the argon2 thread.
    span: tracing::Span,
}

impl Pool {
    /// `threads` verifier threads; they stop when the pool is dropped.
    pub fn start(threads: usize) -> Pool {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut verifier = password::Verifier::default();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let ok = job
                            .span
                            .in_scope(|| verifier.verify(&job.hash, job.presented.expose_secret()));
                        // The asker may be gone (its client disconnected).
                        let _ = job.reply.send(ok);
                    }
                })
                .expect("the OS starts a thread");
        }
        Pool {
            jobs,
            verifications: AtomicU64::new(0),
        }
    }

    /// Whether `presented` matches the PHC string `hash`.
    pub async fn verify(&self, hash: Arc<str>, presented: &[u8]) -> bool {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            hash,
            presented: SecretSlice::from(presented.to_vec()),
            reply,
            span: tracing::Span::current(),
        };
        self.verifications.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("koostatus_argon2_verifications_total").increment(1);
        self.jobs.send(job).is_ok() && answer.await.unwrap_or(false)
    }

    /// How many verifications this process has asked for.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }
}
