//! Waking many tasks of another thread's runtime with one wake-up.
//!
//! A request or a stream is polled by the actix worker that accepted its
//! connection, a single-threaded runtime; the writer and the live reader
//! run on the main runtime. Waking a task of another runtime takes a lock
//! and a system call (an eventfd write that brings the worker out of
//! epoll) per task: per request of a batch, per stream of a read. So each
//! thread that waits for such answers has a courier, a task on its own
//! runtime: the main runtime sends it one bag per batch or read, and the
//! courier hands the letters out where waking a task is a push onto a local
//! queue.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::LocalKey;

use tokio::sync::mpsc;

/// The thread-local slot that holds a thread's courier for letters `T`.
pub type Home<T> = LocalKey<RefCell<Option<Courier<T>>>>;

/// Carries bags of letters `T` to the runtime it was started on.
pub struct Courier<T> {
    id: u64,
    bags: mpsc::UnboundedSender<Vec<T>>,
}

impl<T> Clone for Courier<T> {
    fn clone(&self) -> Self {
        Courier {
            id: self.id,
            bags: self.bags.clone(),
        }
    }
}

impl<T: Send + 'static> Courier<T> {
    /// The courier of the calling thread kept in `home`, started on the
    /// calling runtime on first use, and again when that runtime has ended
    /// (tests run many). It runs `hand_out` over the bags sent to it; on a
    /// worker's single-threaded runtime that is the worker's own thread.
    pub fn here<F, Fut>(home: &'static Home<T>, hand_out: F) -> Courier<T>
    where
        F: FnOnce(mpsc::UnboundedReceiver<Vec<T>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        home.with_borrow_mut(|here| {
            if let Some(courier) = here.as_ref().filter(|c| !c.bags.is_closed()) {
                return courier.clone();
            }
            static NEXT_ID: AtomicU64 = AtomicU64::new(0);
            let (bags, incoming) = mpsc::unbounded_channel();
            tokio::spawn(hand_out(incoming));
            let courier = Courier {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                bags,
            };
            *here = Some(courier.clone());
            courier
        })
    }

    /// Tells couriers apart: one per thread and runtime.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Letters sorted by courier, sent as one bag each.
pub struct Round<T>(Vec<(Courier<T>, Vec<T>)>);

impl<T> Default for Round<T> {
    fn default() -> Self {
        Round(Vec::new())
    }
}

impl<T> Round<T> {
    pub fn add(&mut self, courier: &Courier<T>, letter: T) {
        // A handful of workers: a list beats a map.
        match self.0.iter_mut().find(|(c, _)| c.id == courier.id) {
            Some((_, bag)) => bag.push(letter),
            None => self.0.push((courier.clone(), vec![letter])),
        }
    }

    /// One wake-up per courier. A courier whose runtime has ended took the
    /// letters' addressees with it: their letters are dropped.
    pub fn send(self) {
        for (courier, bag) in self.0 {
            let _ = courier.bags.send(bag);
        }
    }
}
