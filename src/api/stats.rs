//! `GET /api/v1/channels/{channel_id}/stats`: delivery statistics per hour
//! or UTC day, from the aggregates the writes keep (migrations/V6), so a
//! request reads a few rows per bucket whatever the channel's size.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Readable;
use crate::domain::stats::{Bucket, Counts, ReadTimes};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The widest range a request may ask for.
const MAX_RANGE_DAYS: i64 = 366;
/// The range when `from` is not given: this much before `to`.
const DEFAULT_RANGE_DAYS: i64 = 7;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
// Read as text and checked here, for our own 400 sentences.
pub struct StatsParams {
    /// Start of the range (RFC 3339), rounded down to its bucket; default
    /// 7 days before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// End of the range (RFC 3339, exclusive), at most 366 days after
    /// `from`; default now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// `hour` or `day` (UTC), default `day`.
    #[param(value_type = Option<String>, pattern = "^(hour|day)$")]
    bucket: Option<String>,
    /// Only messages registered with this tag (1 to 64 characters).
    #[param(min_length = 1, max_length = 64)]
    tag: Option<String>,
    /// `json` (default) or `csv`: a download with a row per bucket and a
    /// last row `total`.
    #[param(value_type = Option<String>, pattern = "^(json|csv)$")]
    format: Option<String>,
}

/// Percentiles of a time from a message's `first_seen_at` (time to read:
/// to its first `read`; time to deliver: to its first `delivered` or
/// `read`); within 5 % (or 1 s) of the exact value.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimeToRead {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// Messages first seen in a bucket (or the whole range), by current status.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsTotal {
    pub messages: i64,
    /// Registered and waiting for a report.
    pub sent: i64,
    /// Stayed `sent` for `reports.unreported_after` without a report.
    pub unreported: i64,
    pub failed: i64,
    pub delivered: i64,
    pub read: i64,
    /// (delivered + read) / messages; 0 without messages.
    pub delivered_rate: f64,
    /// read / messages.
    pub read_rate: f64,
    /// failed / messages.
    pub failed_rate: f64,
    /// unreported / messages.
    pub unreported_rate: f64,
    /// Seconds; null when no message of the bucket is read.
    pub time_to_read_seconds: Option<TimeToRead>,
    /// From `first_seen_at` (the sending time of a registered message) to
    /// the first `delivered` or `read`, over the messages now delivered or
    /// read; seconds, null when there are none.
    pub time_to_deliver_seconds: Option<TimeToRead>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsBucket {
    /// The bucket's start (UTC).
    pub start: DateTime<Utc>,
    #[serde(flatten)]
    pub stats: StatsTotal,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "buckets": [{
        "start": "2026-11-23T00:00:00Z", "messages": 1200, "sent": 0, "unreported": 12,
        "failed": 18, "delivered": 370, "read": 800, "delivered_rate": 0.975,
        "read_rate": 0.6667, "failed_rate": 0.015, "unreported_rate": 0.01,
        "time_to_read_seconds": {"p50": 95.4, "p90": 1820.3, "p99": 20405.9},
        "time_to_deliver_seconds": {"p50": 2.1, "p90": 6.7, "p99": 40.4}
    }],
    "total": {
        "messages": 1200, "sent": 0, "unreported": 12, "failed": 18, "delivered": 370,
        "read": 800, "delivered_rate": 0.975, "read_rate": 0.6667, "failed_rate": 0.015,
        "unreported_rate": 0.01,
        "time_to_read_seconds": {"p50": 95.4, "p90": 1820.3, "p99": 20405.9},
        "time_to_deliver_seconds": {"p50": 2.1, "p90": 6.7, "p99": 40.4}
    }
}))]
pub struct Stats {
    /// Every bucket overlapping the range, oldest first, empty ones too.
    pub buckets: Vec<StatsBucket>,
    pub total: StatsTotal,
}

#[utoipa::path(
    get,
    path = "/api/v1/channels/{channel_id}/stats",
    tag = "read",
    security(("bearer" = [])),
    params(("channel_id" = String, Path), StatsParams),
    responses(
        (status = 200, description = "Messages grouped by the UTC hour or day of their first_seen_at: counts by current status, rates and time-to-read and time-to-deliver percentiles; with format=csv the same as a CSV download, a row per bucket and a last row `total`", content(
            (Stats = "application/json"),
            (String = "text/csv")
        )),
        (status = 400, description = "A bad time, bucket, tag or format, `from` not before `to`, or more than 366 days", body = ErrorBody),
        super::ChannelRefusals,
    )
)]
pub async fn stats(
    Readable(channel): Readable,
    params: web::Query<StatsParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let tag = params.tag.clone();
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_format",
                "`format` must be `json` or `csv`.",
            ));
        }
    };
    super::params::check_tag(tag.as_deref())?;
    let (bucket, from, to) = parse(params, Utc::now())?;
    let starts = bucket.starts(from, to);
    let (first, end) = (
        starts[0],
        *starts.last().expect("from < to") + bucket.width(),
    );
    let (counts, read, deliver) = state
        .db
        .stats(channel.to_string(), tag, bucket, first, end)
        .await?;
    let stats = assemble(&starts, counts, read, deliver);
    if !csv {
        return Ok(HttpResponse::Ok().json(stats));
    }
    let name = format!(
        "koostatus-{channel}-stats-{}-{}.csv",
        first.format("%Y%m%dT%H%M%SZ"),
        end.format("%Y%m%dT%H%M%SZ")
    );
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .body(to_csv(&stats)))
}

/// The statistics as CSV: a header row, a row per bucket, then `total`.
/// Every cell is a number, a time or empty: nothing to make inert.
fn to_csv(stats: &Stats) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([
        "start",
        "messages",
        "sent",
        "unreported",
        "failed",
        "delivered",
        "read",
        "delivered_rate",
        "read_rate",
        "failed_rate",
        "unreported_rate",
        "time_to_read_p50",
        "time_to_read_p90",
        "time_to_read_p99",
        "time_to_deliver_p50",
        "time_to_deliver_p90",
        "time_to_deliver_p99",
    ])
    .expect("writing to memory");
    let rows = stats
        .buckets
        .iter()
        .map(|b| {
            (
                b.start.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                &b.stats,
            )
        })
        .chain(std::iter::once(("total".to_owned(), &stats.total)));
    for (start, t) in rows {
        let times = |p: &Option<TimeToRead>| match p {
            Some(p) => [p.p50, p.p90, p.p99].map(|v| v.to_string()),
            None => [String::new(), String::new(), String::new()],
        };
        let mut record = vec![
            start,
            t.messages.to_string(),
            t.sent.to_string(),
            t.unreported.to_string(),
            t.failed.to_string(),
            t.delivered.to_string(),
            t.read.to_string(),
            t.delivered_rate.to_string(),
            t.read_rate.to_string(),
            t.failed_rate.to_string(),
            t.unreported_rate.to_string(),
        ];
        record.extend(times(&t.time_to_read_seconds));
        record.extend(times(&t.time_to_deliver_seconds));
        out.write_record(record).expect("writing to memory");
    }
    out.into_inner().expect("writing to memory")
}

fn parse(
    p: StatsParams,
    now: DateTime<Utc>,
) -> Result<(Bucket, DateTime<Utc>, DateTime<Utc>), ApiError> {
    let time = |name: &str, value: Option<String>| {
        value
            .map(|v| {
                DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiError::bad_request(
                            "invalid_time",
                            format!(
                                "`{name}` must be an RFC 3339 time such as 2026-11-24T00:00:00Z."
                            ),
                        )
                    })
            })
            .transpose()
    };
    let bucket = match p.bucket.as_deref() {
        None => Bucket::Day,
        Some(b) => Bucket::parse(b).ok_or_else(|| {
            ApiError::bad_request("invalid_bucket", "`bucket` must be `hour` or `day`.")
        })?,
    };
    let to = time("to", p.to)?.unwrap_or(now);
    let from = time("from", p.from)?.unwrap_or(to - TimeDelta::days(DEFAULT_RANGE_DAYS));
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_range",
            "`from` must be before `to`.",
        ));
    }
    if to - from > TimeDelta::days(MAX_RANGE_DAYS) {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("`from` and `to` may be at most {MAX_RANGE_DAYS} days apart."),
        ));
    }
    Ok((bucket, from, to))
}

/// Every bucket of `starts`, from the aggregates of those that have any.
fn assemble(
    starts: &[DateTime<Utc>],
    counts: Vec<(DateTime<Utc>, Counts)>,
    read: Vec<(DateTime<Utc>, ReadTimes)>,
    deliver: Vec<(DateTime<Utc>, ReadTimes)>,
) -> Stats {
    let mut counts = counts.into_iter().peekable();
    let mut read = read.into_iter().peekable();
    let mut deliver = deliver.into_iter().peekable();
    let (mut all_counts, mut all_read, mut all_deliver) = (
        Counts::default(),
        ReadTimes::default(),
        ReadTimes::default(),
    );
    let mut buckets = Vec::with_capacity(starts.len());
    for &start in starts {
        let c = counts
            .next_if(|(s, _)| *s == start)
            .map(|(_, c)| c)
            .unwrap_or_default();
        let r = read
            .next_if(|(s, _)| *s == start)
            .map(|(_, t)| t)
            .unwrap_or_default();
        let d = deliver
            .next_if(|(s, _)| *s == start)
            .map(|(_, t)| t)
            .unwrap_or_default();
        all_counts.add(c);
        all_read.merge(&r);
        all_deliver.merge(&d);
        buckets.push(StatsBucket {
            start,
            stats: total(c, &r, &d),
        });
    }
    Stats {
        buckets,
        total: total(all_counts, &all_read, &all_deliver),
    }
}

/// p50, p90 and p99 of a histogram; None when it is empty.
fn percentiles(t: &ReadTimes) -> Option<TimeToRead> {
    Some(TimeToRead {
        p50: t.percentile(0.5)?,
        p90: t.percentile(0.9)?,
        p99: t.percentile(0.99)?,
    })
}

fn total(c: Counts, read: &ReadTimes, deliver: &ReadTimes) -> StatsTotal {
    let rates = c.rates();
    StatsTotal {
        messages: c.messages,
        sent: c.sent(),
        unreported: c.unreported(),
        failed: c.failed(),
        delivered: c.delivered(),
        read: c.read(),
        delivered_rate: rates.delivered,
        read_rate: rates.read,
        failed_rate: rates.failed,
        unreported_rate: rates.unreported,
        time_to_read_seconds: percentiles(read),
        time_to_deliver_seconds: percentiles(deliver),
    }
}
