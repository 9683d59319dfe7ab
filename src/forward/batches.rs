//! Full deliveries recently read from the feed, by channel and the position
//! they follow. A full delivery is fixed by where it starts (see
//! [`super::delivery`]), so subscriptions of one channel that move together
//! read and serialise each once: the first reads ten ahead, the others find
//! them here. Bounded; the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use actix_web::web::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::changes::{Change, Position};
use crate::live::ChangeEntry;

/// Full deliveries kept at most (about 15 KB each with 100 changes).
const KEEP: usize = 400;

/// A delivery's changes, serialised as its body.
pub struct Batch {
    pub last: Position,
    pub body: Bytes,
    pub changes: usize,
    /// When the oldest of them was received (lag).
    pub oldest: DateTime<Utc>,
}

/// The body of a delivery (SPEC §11).
#[derive(Serialize)]
struct Payload<'a> {
    channel_id: &'a str,
    changes: Vec<ChangeEntry>,
}

impl Batch {
    /// None when there are no changes.
    pub fn new(channel: &str, changes: Vec<Change>) -> Option<Batch> {
        let (first, last) = (changes.first()?, changes.last()?);
        let (last, oldest, count) = (last.position, first.changed_at, changes.len());
        let payload = Payload {
            channel_id: channel,
            changes: changes.into_iter().map(ChangeEntry::from).collect(),
        };
        let body = serde_json::to_vec(&payload).expect("a delivery serialises");
        Some(Batch {
            last,
            body: body.into(),
            changes: count,
            oldest,
        })
    }
}

type Key = (Arc<str>, Position);

#[derive(Default)]
pub struct Batches {
    kept: Mutex<Kept>,
}

/// The deliveries, and their keys oldest first.
#[derive(Default)]
struct Kept(HashMap<Key, Arc<Batch>>, VecDeque<Key>);

impl Batches {
    /// The full delivery that follows `after`, if one was read lately.
    pub fn get(&self, channel: &str, after: Position) -> Option<Arc<Batch>> {
        let kept = self.kept.lock().expect("lock not poisoned");
        kept.0.get(&(Arc::from(channel), after)).cloned()
    }

    /// Cuts what a read after `after` returned into full deliveries of
    /// `size` (a shorter rest is dropped: it is not fixed), keeps them, and
    /// returns the first.
    pub fn add(
        &self,
        channel: &str,
        mut after: Position,
        changes: Vec<Change>,
        size: usize,
    ) -> Option<Arc<Batch>> {
        let channel: Arc<str> = Arc::from(channel);
        let mut first = None;
        let mut changes = changes.into_iter();
        let mut made = Vec::new();
        loop {
            let chunk: Vec<Change> = changes.by_ref().take(size).collect();
            if chunk.len() < size {
                break;
            }
            let batch = Arc::new(Batch::new(&channel, chunk).expect("a full delivery"));
            first.get_or_insert_with(|| batch.clone());
            let last = batch.last;
            made.push(((channel.clone(), after), batch));
            after = last;
        }
        let mut kept = self.kept.lock().expect("lock not poisoned");
        let Kept(map, order) = &mut *kept;
        for (key, batch) in made {
            if map.insert(key.clone(), batch).is_none() {
                order.push_back(key);
            }
        }
        while order.len() > KEEP {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
        first
    }
}
