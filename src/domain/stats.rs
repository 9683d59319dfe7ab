//! Delivery statistics from the aggregates (migrations/V6): buckets of time,
//! counts by current status and rates, and time-to-read percentiles from a
//! histogram whose bins are at most 10 % wide.

use chrono::{DateTime, TimeDelta, Utc};

/// The width of a statistics bucket, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn parse(s: &str) -> Option<Bucket> {
        [Bucket::Hour, Bucket::Day]
            .into_iter()
            .find(|b| b.name() == s)
    }

    /// As the API and PostgreSQL's date_trunc name it.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }

    pub fn width(self) -> TimeDelta {
        match self {
            Bucket::Hour => TimeDelta::hours(1),
            Bucket::Day => TimeDelta::days(1),
        }
    }

    /// Hours per bucket, as the aggregates name them.
    pub fn hours(self) -> i16 {
        match self {
            Bucket::Hour => 1,
            Bucket::Day => 24,
        }
    }

    /// The start of the bucket holding `t`. In whole seconds: chrono's
    /// `duration_trunc` counts nanoseconds and fails after the year 2262.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let (secs, width) = (t.timestamp(), self.width().num_seconds());
        DateTime::from_timestamp(secs - secs.rem_euclid(width), 0).expect("an earlier time exists")
    }

    /// The start of every bucket that overlaps `[from, to)`.
    pub fn starts(self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut starts = Vec::new();
        let mut t = self.floor(from);
        while t < to {
            starts.push(t);
            t += self.width();
        }
        starts
    }
}

/// Messages of one bucket (or all of them), by current status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub messages: i64,
    /// Now `unreported` or above.
    pub reached_unreported: i64,
    /// Now `failed` or above.
    pub reached_failed: i64,
    /// Now `delivered` or `read`.
    pub reached_delivered: i64,
    /// Now `read`.
    pub reached_read: i64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.messages += other.messages;
        self.reached_unreported += other.reached_unreported;
        self.reached_failed += other.reached_failed;
        self.reached_delivered += other.reached_delivered;
        self.reached_read += other.reached_read;
    }

    pub fn sent(&self) -> i64 {
        self.messages - self.reached_unreported
    }

    pub fn unreported(&self) -> i64 {
        self.reached_unreported - self.reached_failed
    }

    pub fn failed(&self) -> i64 {
        self.reached_failed - self.reached_delivered
    }

    pub fn delivered(&self) -> i64 {
        self.reached_delivered - self.reached_read
    }

    pub fn read(&self) -> i64 {
        self.reached_read
    }

    /// (delivered + read) / messages, read / messages, failed / messages,
    /// unreported / messages; 0 without messages.
    pub fn rates(&self) -> Rates {
        let share = |n: i64| match self.messages {
            0 => 0.0,
            all => n as f64 / all as f64,
        };
        Rates {
            delivered: share(self.reached_delivered),
            read: share(self.reached_read),
            failed: share(self.failed()),
            unreported: share(self.unreported()),
        }
    }
}

/// Shares of a bucket's messages (SPEC §9, §13).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Delivered or read.
    pub delivered: f64,
    pub read: f64,
    pub failed: f64,
    pub unreported: f64,
}

/// Times to read, as counts per bin: bin 0 holds under 1 s, bin k holds
/// [1.1^(k-1), 1.1^k) s (`koostatus_read_bin` in migrations/V6).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadTimes(std::collections::BTreeMap<i16, i64>);

impl ReadTimes {
    pub fn add(&mut self, bin: i16, n: i64) {
        *self.0.entry(bin).or_default() += n;
    }

    pub fn merge(&mut self, other: &ReadTimes) {
        other.0.iter().for_each(|(&bin, &n)| self.add(bin, n));
    }

    /// The `p`-quantile (0 < p <= 1) by nearest rank, as the middle of its
    /// bin: within 0.5 s under 1 s, within 5 % above; None when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let total: i64 = self.0.values().filter(|&&n| n > 0).sum();
        if total == 0 {
            return None;
        }
        let rank = ((p * total as f64).ceil() as i64).max(1);
        let mut seen = 0;
        for (&bin, &n) in self.0.iter().filter(|(_, n)| **n > 0) {
            seen += n;
            if seen >= rank {
                return Some(middle(bin));
            }
        }
        None
    }
}

/// The value a bin stands for: 0.5 s for bin 0, else the geometric middle.
fn middle(bin: i16) -> f64 {
    if bin <= 0 {
        0.5
    } else {
        1.1f64.powf(f64::from(bin) - 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The bin of a time to read, as the database computes it.
    fn bin_of(seconds: f64) -> i16 {
        if seconds < 1.0 {
            0
        } else {
            1 + (seconds.ln() / 1.1f64.ln()).floor() as i16
        }
    }

    proptest! {
        /// The histogram's percentile is within 5 % (or 1 s) of the exact
        /// nearest-rank percentile of the values it was built from.
        #[test]
        fn percentiles_are_within_the_bound(
            values in prop::collection::vec(0.0f64..3_000_000.0, 1..400),
            p in prop::sample::select(vec![0.5, 0.9, 0.99]),
        ) {
            let mut times = ReadTimes::default();
            values.iter().for_each(|&v| times.add(bin_of(v), 1));
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
            let exact = sorted[rank - 1];
            let estimate = times.percentile(p).unwrap();
            prop_assert!(
                (estimate - exact).abs() <= (exact * 0.05).max(1.0),
                "p{p}: {estimate} for {exact}"
            );
        }
    }

    #[test]
    fn buckets_cover_the_range_in_utc() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let days = Bucket::Day.starts(t("2026-11-23T22:30:00Z"), t("2026-11-25T00:00:00Z"));
        assert_eq!(
            days,
            vec![t("2026-11-23T00:00:00Z"), t("2026-11-24T00:00:00Z")]
        );
        let hours = Bucket::Hour.starts(t("2026-11-23T22:30:00Z"), t("2026-11-24T00:00:01Z"));
        assert_eq!(hours.len(), 3);
        // Beyond what nanoseconds since 1970 can count, and before 1970.
        let far = Bucket::Hour.starts(t("2263-01-01T00:00:00Z"), t("2263-01-01T01:30:00Z"));
        assert_eq!(
            far,
            vec![t("2263-01-01T00:00:00Z"), t("2263-01-01T01:00:00Z")]
        );
        let early = Bucket::Day.starts(t("1969-12-31T12:00:00Z"), t("1970-01-01T00:00:01Z"));
        assert_eq!(
            early,
            vec![t("1969-12-31T00:00:00Z"), t("1970-01-01T00:00:00Z")]
        );
    }

    #[test]
    fn counts_and_rates() {
        let c = Counts {
            messages: 20,
            reached_unreported: 16,
            reached_failed: 12,
            reached_delivered: 8,
            reached_read: 5,
        };
        assert_eq!(
            (
                c.sent(),
                c.unreported(),
                c.failed(),
                c.delivered(),
                c.read()
            ),
            (4, 4, 4, 3, 5)
        );
        let r = c.rates();
        assert_eq!(
            (r.delivered, r.read, r.failed, r.unreported),
            (0.4, 0.25, 0.2, 0.2)
        );
        let none = Counts::default().rates();
        assert_eq!(
            (none.delivered, none.failed, none.unreported),
            (0.0, 0.0, 0.0)
        );
    }
}
