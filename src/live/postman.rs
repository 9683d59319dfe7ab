//! Hands a read's deliveries to the streams from the streams' own thread.
//!
//! A stream is polled by the actix worker that accepted its connection, a
//! single-threaded runtime; the reader runs on the main runtime. Waking a
//! task of another runtime takes a lock and a system call (an eventfd
//! write that brings the worker out of epoll) per wake-up: per stream and
//! read, ten thousand a second with a thousand busy desktops. So the reader
//! sends each worker one bag per read, and that worker's postman hands the
//! deliveries out where waking a stream is a push onto a local queue.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::Delivery;

/// One delivery for one stream.
pub(super) type Letter = (mpsc::UnboundedSender<Delivery>, Delivery);

#[derive(Clone)]
pub(super) struct Postman {
    id: u64,
    bags: mpsc::UnboundedSender<Vec<Letter>>,
}

thread_local! {
    static HERE: RefCell<Option<Postman>> = const { RefCell::new(None) };
}

impl Postman {
    /// The postman of the calling thread, started on its runtime on first
    /// use, and again when that runtime has ended (tests run many).
    pub(super) fn here() -> Postman {
        HERE.with_borrow_mut(|here| {
            if let Some(postman) = here.as_ref().filter(|p| !p.bags.is_closed()) {
                return postman.clone();
            }
            static NEXT_ID: AtomicU64 = AtomicU64::new(0);
            let (bags, mut incoming) = mpsc::unbounded_channel::<Vec<Letter>>();
            // On a worker's single-threaded runtime this task runs on the
            // worker's thread, beside the streams it serves.
            tokio::spawn(async move {
                while let Some(bag) = incoming.recv().await {
                    for (stream, delivery) in bag {
                        // A stream that ended meanwhile needs nothing.
                        let _ = stream.send(delivery);
                    }
                }
            });
            let postman = Postman {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                bags,
            };
            *here = Some(postman.clone());
            postman
        })
    }
}

/// One read's deliveries, sorted by postman.
#[derive(Default)]
pub(super) struct Round(Vec<(Postman, Vec<Letter>)>);

impl Round {
    pub(super) fn add(&mut self, postman: &Postman, letter: Letter) {
        // A handful of workers: a list beats a map.
        match self.0.iter_mut().find(|(p, _)| p.id == postman.id) {
            Some((_, bag)) => bag.push(letter),
            None => self.0.push((postman.clone(), vec![letter])),
        }
    }

    /// One wake-up per worker. A postman whose runtime has ended took its
    /// streams with it.
    pub(super) fn send(self) {
        for (postman, bag) in self.0 {
            let _ = postman.bags.send(bag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Event;
    use actix_web::web::Bytes;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    fn delivery(n: u64) -> Delivery {
        Delivery::Some(vec![Event {
            position: crate::db::changes::Position {
                xid: n as i64,
                seq: 1,
            },
            frame: Bytes::from(n.to_string()),
        }])
    }

    /// Deliveries sent from another thread arrive in order, through the
    /// postman of the thread that asked for it; a thread's next runtime
    /// gets a postman of its own.
    #[test]
    fn a_round_reaches_streams_in_order_from_another_thread() {
        let first = runtime().block_on(async { Postman::here() });
        let rt = runtime();
        let (postman, (a, mut ra), (b, mut rb)) = rt.block_on(async {
            let again = Postman::here();
            assert_eq!(again.id, Postman::here().id, "one postman per runtime");
            (again, mpsc::unbounded_channel(), mpsc::unbounded_channel())
        });
        assert_ne!(first.id, postman.id, "the first runtime has ended");
        std::thread::spawn(move || {
            for n in 0..3 {
                let mut round = Round::default();
                round.add(&postman, (a.clone(), delivery(n)));
                round.add(&postman, (b.clone(), delivery(10 + n)));
                round.send();
            }
        })
        .join()
        .expect("the sender finished");
        let frames = |d: Option<Delivery>| d.expect("a delivery").events()[0].frame.clone();
        rt.block_on(async {
            for n in 0..3 {
                assert_eq!(frames(ra.recv().await), n.to_string());
                assert_eq!(frames(rb.recv().await), (10 + n).to_string());
            }
        });
    }
}
