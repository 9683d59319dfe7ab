//! What deliveries are made of: changes read from a channel's feed, each
//! serialised once, kept in segments that subscriptions of the channel
//! share.
//!
//! A segment holds every change of the feed after its start up to its last
//! one: contiguous reads below the horizon, which never gains a change
//! between two it has (V3). So the first `forward.batch_max` changes after
//! any position in it are what anyone reading the feed there would get, now
//! or after a crash: a full delivery, fixed by where it starts. The
//! subscriptions of a channel read the feed ahead into one shared segment
//! that follows the channel's head; one that is behind it reads into a
//! segment of its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use actix_web::web::Bytes;
use chrono::{DateTime, Utc};

use crate::db::changes::{Change, Position};
use crate::live::ChangeEntry;

/// Changes a segment keeps at most (about 150 bytes each).
const KEEP: usize = 20_000;

/// A change, serialised as it appears in a delivery's `changes`.
#[derive(Clone)]
pub struct Row {
    position: Position,
    changed_at: DateTime<Utc>,
    json: Bytes,
}

impl From<Change> for Row {
    fn from(change: Change) -> Row {
        let (position, changed_at) = (change.position, change.changed_at);
        let json = serde_json::to_vec(&ChangeEntry::from(change)).expect("a change serialises");
        Row {
            position,
            changed_at,
            json: json.into(),
        }
    }
}

/// A delivery's body and what the delivering task needs to know of it.
pub struct Delivery {
    pub last: Position,
    pub changes: usize,
    /// When the oldest of its changes was received (lag).
    pub oldest: DateTime<Utc>,
    /// `{"channel_id": ..., "changes": [...]}` (SPEC §11).
    pub body: Bytes,
}

impl Delivery {
    /// None when there are no changes.
    pub fn new(channel: &str, rows: &[Row]) -> Option<Delivery> {
        let (first, last) = (rows.first()?, rows.last()?);
        let channel = serde_json::to_string(channel).expect("a string serialises");
        let size: usize = rows.iter().map(|r| r.json.len() + 1).sum();
        let mut body = Vec::with_capacity(size + channel.len() + 32);
        body.extend_from_slice(b"{\"channel_id\":");
        body.extend_from_slice(channel.as_bytes());
        body.extend_from_slice(b",\"changes\":[");
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&row.json);
        }
        body.extend_from_slice(b"]}");
        Some(Delivery {
            last: last.position,
            changes: rows.len(),
            oldest: first.changed_at,
            body: body.into(),
        })
    }

    pub fn of_changes(channel: &str, changes: Vec<Change>) -> Option<Delivery> {
        let rows: Vec<Row> = changes.into_iter().map(Row::from).collect();
        Delivery::new(channel, &rows)
    }
}

/// Every change of the feed after `after` up to the last of `rows`.
#[derive(Default)]
pub struct Segment {
    after: Position,
    rows: VecDeque<Row>,
    /// When a subscription last started reading the feed after its end.
    read_at: Option<Instant>,
}

impl Segment {
    fn end(&self) -> Position {
        self.rows.back().map_or(self.after, |r| r.position)
    }

    /// Up to `max` changes after `position`, and where the segment ends;
    /// None when the segment does not hold `position`.
    pub fn take(&self, position: Position, max: usize) -> Option<(Vec<Row>, Position)> {
        if position < self.after || position > self.end() {
            return None;
        }
        let from = self.rows.partition_point(|r| r.position <= position);
        let rows = self.rows.range(from..).take(max).cloned().collect();
        Some((rows, self.end()))
    }

    /// Adds what a read after `after` returned: appended when it continues
    /// the segment, else the segment starts anew there.
    pub fn add(&mut self, after: Position, rows: Vec<Row>) {
        if after != self.end() {
            self.after = after;
            self.rows.clear();
        }
        self.rows.extend(rows);
        while self.rows.len() > KEEP {
            if let Some(dropped) = self.rows.pop_front() {
                self.after = dropped.position;
            }
        }
    }
}

/// The shared segment of each channel, at its head.
#[derive(Default)]
pub struct Shared {
    segments: Mutex<HashMap<String, Segment>>,
}

impl Shared {
    pub fn take(
        &self,
        channel: &str,
        position: Position,
        max: usize,
    ) -> Option<(Vec<Row>, Position)> {
        let segments = self.segments.lock().expect("lock not poisoned");
        segments.get(channel)?.take(position, max)
    }

    /// When a subscription last started reading the channel's feed after
    /// `end`, if that is the shared segment's end: the others wait a moment
    /// for what it brings rather than read the same.
    pub fn read_at(&self, channel: &str, end: Position) -> Option<Instant> {
        let segments = self.segments.lock().expect("lock not poisoned");
        let segment = segments.get(channel)?;
        (segment.end() == end).then_some(segment.read_at).flatten()
    }

    /// A subscription starts reading after `end`.
    pub fn reading(&self, channel: &str, end: Position) {
        let mut segments = self.segments.lock().expect("lock not poisoned");
        let segment = segments.entry(channel.to_owned()).or_default();
        if end >= segment.end() {
            segment.read_at = Some(Instant::now());
        }
    }

    /// Adds a read after `after` if it continues the channel's shared
    /// segment or lies ahead of it (the head moved on); false when it lies
    /// behind, for the reader's own segment.
    pub fn add(&self, channel: &str, after: Position, rows: &[Row]) -> bool {
        let mut segments = self.segments.lock().expect("lock not poisoned");
        let segment = segments.entry(channel.to_owned()).or_default();
        if after < segment.end() {
            return false;
        }
        segment.add(after, rows.to_vec());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> Row {
        Row {
            position: Position { xid: 1, seq },
            changed_at: Utc::now(),
            json: Bytes::from(format!("{seq}")),
        }
    }

    fn seqs(rows: &[Row]) -> Vec<i64> {
        rows.iter().map(|r| r.position.seq).collect()
    }

    #[test]
    fn a_segment_gives_what_follows_a_position_it_holds() {
        let mut segment = Segment::default();
        let start = Position { xid: 1, seq: 0 };
        segment.add(start, (1..=5).map(row).collect());
        segment.add(Position { xid: 1, seq: 5 }, (6..=8).map(row).collect());
        let (rows, end) = segment.take(Position { xid: 1, seq: 2 }, 4).unwrap();
        assert_eq!(seqs(&rows), [3, 4, 5, 6]);
        assert_eq!(end, Position { xid: 1, seq: 8 });
        assert_eq!(
            seqs(&segment.take(start, 100).unwrap().0),
            (1..=8).collect::<Vec<_>>()
        );
        assert!(segment.take(Position { xid: 1, seq: 9 }, 1).is_none());
        // A read elsewhere starts it anew: nothing before it is claimed.
        segment.add(Position { xid: 2, seq: 0 }, vec![]);
        assert!(segment.take(start, 1).is_none());
        let body = Delivery::new("ch\"1", &(1..=3).map(row).collect::<Vec<_>>()).unwrap();
        assert_eq!(
            &body.body[..],
            br#"{"channel_id":"ch\"1","changes":[1,2,3]}"#
        );
    }
}
