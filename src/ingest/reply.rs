//! Answering the requests of a batch: the writer runs on the main runtime,
//! each request waits on the actix worker that accepted it, so the answers
//! of a batch go to each worker's courier in one bag (one wake-up per
//! worker and batch instead of one per request).

use std::cell::RefCell;

use tokio::sync::oneshot;

use super::batch::WriteError;
use crate::courier::{Courier, Round};
use crate::db::reports::Recorded;

/// What a request is told: committed (`Some`), refused as a conflict
/// (`None`), or not written.
pub(super) type Answer = Result<Option<Recorded>, WriteError>;

type Letter = (oneshot::Sender<Answer>, Answer);

thread_local! {
    static HERE: RefCell<Option<Courier<Letter>>> = const { RefCell::new(None) };
}

/// Where a request waits for its answer.
pub(super) struct Reply {
    to: oneshot::Sender<Answer>,
    courier: Courier<Letter>,
}

impl Reply {
    /// A reply to the calling task, and what it awaits.
    pub(super) fn new() -> (Reply, oneshot::Receiver<Answer>) {
        let (to, answer) = oneshot::channel();
        let courier = Courier::here(&HERE, |mut bags| async move {
            while let Some(bag) = bags.recv().await {
                for (to, answer) in bag {
                    // A request whose client left needs nothing.
                    let _ = to.send(answer);
                }
            }
        });
        (Reply { to, courier }, answer)
    }

    /// Answers this request alone, at once.
    pub(super) fn send(self, answer: Answer) {
        let _ = self.to.send(answer);
    }
}

/// Answers many requests with one wake-up per worker.
pub(super) fn send_all(answers: impl IntoIterator<Item = (Reply, Answer)>) {
    let mut round = Round::default();
    for (reply, answer) in answers {
        round.add(&reply.courier, (reply.to, answer));
    }
    round.send();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::reports::Recorded;

    /// Answers sent from another thread, all in one round, reach each
    /// waiting task of a single-threaded runtime (a worker), each its own.
    #[test]
    fn a_round_of_answers_reaches_each_request_its_own() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = rt.block_on(async {
            (0..100)
                .map(|n| {
                    let (reply, answer) = Reply::new();
                    tx.send((n, reply)).expect("the sender is there");
                    tokio::spawn(async move { (n, answer.await) })
                })
                .collect::<Vec<_>>()
        });
        drop(tx);
        std::thread::spawn(move || {
            send_all(rx.into_iter().map(|(n, reply)| {
                let recorded = Recorded {
                    first_of_status: n % 2 == 0,
                    advanced: n % 3 == 0,
                };
                (reply, Ok(Some(recorded)))
            }));
        })
        .join()
        .expect("the writer's side finished");
        rt.block_on(async {
            for task in waiting {
                let (n, answer) = task.await.expect("the request's task ran");
                let recorded = answer
                    .expect("an answer")
                    .expect("written")
                    .expect("recorded");
                assert_eq!(recorded.first_of_status, n % 2 == 0, "request {n}");
                assert_eq!(recorded.advanced, n % 3 == 0, "request {n}");
            }
        });
    }
}
