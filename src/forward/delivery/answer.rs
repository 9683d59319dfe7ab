//! One attempt at a delivery and what the receiver answered: the signed
//! POST, its bounded answer, and the failure it becomes for `forward list`
//! and the metrics.

use std::time::Duration;

use chrono::Utc;
use reqwest::Url;

use super::super::secret::Secret;
use super::super::target;
use super::Task;
use super::progress::InFlight;

/// Answers larger than this are not read (the connection is dropped).
const MAX_ANSWER: u64 = 64 * 1024;

/// Why an attempt failed: a metrics outcome and a sentence for `forward
/// list`.
pub(super) struct Failure {
    pub(super) outcome: &'static str,
    pub(super) error: String,
}

impl Task {
    /// One attempt: signed now (each attempt has its own timestamp, under
    /// the delivery's webhook-id), answered within `forward.timeout`.
    pub(super) async fn post(
        &self,
        url: &Url,
        secret: &Secret,
        flight: &InFlight,
    ) -> Result<(), Failure> {
        let config = &self.context.config;
        // An address in the URL is not resolved, so the resolver's check
        // does not see it.
        if let Some(ip) = literal_ip(url)
            && !config.allow_private_targets
            && !target::is_public(ip)
        {
            return Err(Failure {
                outcome: "refused",
                error: format!("{ip} is a loopback, private, link-local or multicast address"),
            });
        }
        let timestamp = Utc::now().timestamp();
        let request = self
            .context
            .client
            .post(url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &flight.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                secret.sign(&flight.id, timestamp, &flight.delivery.body),
            )
            .body(flight.delivery.body.clone());
        let answer = async {
            let mut response = request.send().await?;
            let status = response.status();
            // Read (a bounded part of) the answer, so that the connection
            // can serve the next delivery.
            let mut start = Vec::new();
            if response.content_length().is_none_or(|n| n <= MAX_ANSWER) {
                let mut read = 0;
                while let Some(chunk) = response.chunk().await.unwrap_or(None) {
                    read += chunk.len() as u64;
                    if start.len() < 200 {
                        start.extend_from_slice(&chunk[..chunk.len().min(200)]);
                    }
                    if read > MAX_ANSWER {
                        break;
                    }
                }
            }
            Ok::<_, reqwest::Error>((status, response.headers().clone(), start))
        };
        let (status, headers, start) = match tokio::time::timeout(config.timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(Failure::from(e)),
            Err(_) => return Err(timed_out(config.timeout)),
        };
        if status.is_success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&start)
            .chars()
            .take(100)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>();
        let error = if status.is_redirection() {
            let to = headers
                .get("location")
                .and_then(|l| l.to_str().ok())
                .unwrap_or("nowhere");
            format!("HTTP {status}: a redirect to {to}, not followed")
        } else if said.trim().is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {}", said.trim())
        };
        Err(Failure {
            outcome: "rejected",
            error,
        })
    }
}

fn literal_ip(url: &Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(v4.into()),
        url::Host::Ipv6(v6) => Some(v6.into()),
        url::Host::Domain(_) => None,
    }
}

fn timed_out(after: Duration) -> Failure {
    Failure {
        outcome: "timeout",
        error: format!(
            "no answer within {} (forward.timeout)",
            humantime::format_duration(after)
        ),
    }
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Failure {
        let timeout = e.is_timeout();
        let e = e.without_url();
        let mut chain: Vec<String> = vec![e.to_string()];
        let mut refused = false;
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            refused |= s.is::<target::Refused>();
            chain.push(s.to_string());
            source = s.source();
        }
        chain.dedup();
        let outcome = if refused {
            "refused"
        } else if timeout {
            "timeout"
        } else {
            "unreachable"
        };
        Failure {
            outcome,
            error: chain.join(": "),
        }
    }
}
