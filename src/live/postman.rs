//! Hands a read's deliveries to the streams from the streams' own thread,
//! through the thread's courier (`crate::courier`): with a thousand busy
//! desktops, a wake-up per stream and read would be ten thousand system
//! calls a second.

use std::cell::RefCell;

use tokio::sync::mpsc;

use super::Delivery;
use crate::courier::{self, Courier};

/// Streams woken at a time. The worker runs woken tasks in order, and a
/// webhook request whose bytes arrive while a read is being handed out
/// waits behind the streams woken before it: behind every stream of the
/// worker that has news, were they all woken at once. Between slices the
/// postman waits (see [`SPREAD`]) or yields, so the worker looks at its
/// sockets and runs what they woke first (callbacks' p99 beside 10,000
/// desktops: 18 ms at once, 14 ms in slices, 8 ms without desktops; events
/// 3 ms later at the median).
const SLICE: usize = 32;

/// A big bag's slices are spread over this much time rather than handed
/// out back to back. Callbacks are a pipeline bound by latency (each waits
/// for its commit), so a burst of some hundred socket writes every read
/// stalls it: the webhook's requests wait behind the writes while
/// PostgreSQL idles, then arrive all at once. Spread, the same writes cost
/// the callbacks far less (beside 10,000 desktops at 10,000 callbacks/s:
/// 0.91 of the rate alone instead of 0.71, p99 16 ms instead of 21), for
/// events about 12 ms later at the median. Shorter than the reader's gap
/// between reads, so that one bag is done before the next.
const SPREAD: std::time::Duration = std::time::Duration::from_millis(40);

/// One delivery for one stream.
pub(super) type Letter = (mpsc::UnboundedSender<Delivery>, Delivery);

/// The courier of a streams' thread.
pub(super) type Postman = Courier<Letter>;

/// One read's deliveries, sorted by postman.
pub(super) type Round = courier::Round<Letter>;

thread_local! {
    static HERE: RefCell<Option<Postman>> = const { RefCell::new(None) };
}

/// The postman of the calling thread.
pub(super) fn here() -> Postman {
    Courier::here(&HERE, |mut incoming| async move {
        while let Some(bag) = incoming.recv().await {
            let start = tokio::time::Instant::now();
            let gap = SPREAD / bag.len().div_ceil(SLICE).max(1) as u32;
            for (i, (stream, delivery)) in bag.into_iter().enumerate() {
                if i > 0 && i % SLICE == 0 {
                    // Behind the I/O that came in meanwhile, and paced,
                    // unless the next bag waits already (a reader catching
                    // up): what is handed over counts against each
                    // stream's buffer until the stream takes it.
                    if incoming.is_empty() {
                        let slice = (i / SLICE) as u32;
                        tokio::time::sleep_until(start + gap * slice).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
                // A stream that ended meanwhile needs nothing.
                let _ = stream.send(delivery);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Event;
    use actix_web::web::Bytes;
    use std::sync::atomic::Ordering;

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
        let first = runtime().block_on(async { here() });
        let rt = runtime();
        let (postman, (a, mut ra), (b, mut rb)) = rt.block_on(async {
            let again = here();
            assert_eq!(again.id(), here().id(), "one postman per runtime");
            (again, mpsc::unbounded_channel(), mpsc::unbounded_channel())
        });
        assert_ne!(first.id(), postman.id(), "the first runtime has ended");
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

    /// A big bag is spread over SPREAD, slice by slice; one whose next bag
    /// already waits (a reader catching up) is handed out without waiting.
    #[test]
    fn a_big_bag_is_spread_unless_the_next_one_waits() {
        let rt = runtime();
        rt.block_on(async {
            let postman = here();
            let slices = 10;
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut round = Round::default();
            (0..SLICE * slices).for_each(|n| round.add(&postman, (tx.clone(), delivery(n as u64))));
            let start = tokio::time::Instant::now();
            round.send();
            for _ in 0..SLICE * slices {
                rx.recv().await.expect("a delivery");
            }
            let paced = SPREAD / slices as u32 * (slices as u32 - 1);
            assert!(
                start.elapsed() >= paced,
                "the last slice went out before {paced:?}"
            );

            // Two bags at once: the first is not paced. Nothing here waits
            // for time: only yields, far shorter than a slice's gap.
            for bag in [SLICE * 2, 1] {
                let mut round = Round::default();
                (0..bag).for_each(|n| round.add(&postman, (tx.clone(), delivery(n as u64))));
                round.send();
            }
            let mut got = 0;
            for _ in 0..1_000 {
                while rx.try_recv().is_ok() {
                    got += 1;
                }
                if got == SLICE * 2 + 1 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert_eq!(got, SLICE * 2 + 1, "the first bag waited for its pace");
        });
    }

    /// A big round wakes its streams a slice at a time: a task woken
    /// meanwhile (here by the first stream; in the service, a webhook
    /// request whose bytes arrived) runs before the rest of the round.
    #[test]
    fn a_big_round_lets_other_tasks_run_between_slices() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;
        const STREAMS: usize = 1000;
        let seen = runtime().block_on(async {
            let postman = here();
            let (handed, parked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let (first, woken) = tokio::sync::oneshot::channel::<()>();
            let (report, seen) = tokio::sync::oneshot::channel();
            let probe = handed.clone();
            tokio::spawn(async move {
                let _ = woken.await;
                let _ = report.send(probe.load(Ordering::SeqCst));
            });
            let mut first = Some(first);
            let mut round = Round::default();
            for n in 0..STREAMS {
                let (tx, mut rx) = mpsc::unbounded_channel();
                round.add(&postman, (tx, delivery(n as u64)));
                let (handed, parked, first) = (handed.clone(), parked.clone(), first.take());
                tokio::spawn(async move {
                    parked.fetch_add(1, Ordering::SeqCst);
                    rx.recv().await.expect("a delivery");
                    handed.fetch_add(1, Ordering::SeqCst);
                    if let Some(first) = first {
                        let _ = first.send(());
                    }
                });
            }
            while parked.load(Ordering::SeqCst) < STREAMS {
                tokio::task::yield_now().await;
            }
            round.send();
            seen.await.expect("the probe ran")
        });
        assert!(
            seen < STREAMS / 10,
            "the task woken by the first stream ran after {seen} streams had theirs"
        );
    }
}
