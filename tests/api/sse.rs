//! A Server-Sent Events reader for the tests: events as (id, data), comment
//! lines (heartbeats) counted, and the end of the stream told apart from
//! silence.

use std::time::Duration;

use serde_json::Value;

pub struct Sse {
    response: reqwest::Response,
    buffer: String,
    pub heartbeats: usize,
    /// `: open` lines: the one comment a stream starts with.
    pub opened: usize,
    /// The server ended the stream.
    pub ended: bool,
}

impl Sse {
    /// `/events` of `channel` with a bearer token, from `last_event_id`.
    pub async fn open(
        address: &str,
        channel: &str,
        token: &str,
        last_event_id: Option<&str>,
    ) -> Sse {
        let mut request = reqwest::Client::new()
            .get(format!("{address}/api/v1/channels/{channel}/events"))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        Sse::start(request).await
    }

    /// Sends the request and checks that a stream answers.
    pub async fn start(request: reqwest::RequestBuilder) -> Sse {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Sse {
            response,
            buffer: String::new(),
            heartbeats: 0,
            opened: 0,
            ended: false,
        }
    }

    /// The next event, or None after `within` or at the end of the stream.
    pub async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut data) = (None, None);
                for line in block.lines().filter(|l| !l.is_empty()) {
                    if line == ": open" {
                        self.opened += 1;
                    } else if line.starts_with(':') {
                        self.heartbeats += 1;
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    } else {
                        assert_eq!(line, "event: change");
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    return Some((id, data));
                }
            }
            if self.ended {
                return None;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?;
            match chunk {
                Ok(Some(chunk)) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                Ok(None) | Err(_) => self.ended = true,
            }
        }
    }

    /// Events until `within` passes without one, or the stream ends.
    pub async fn drain(&mut self, within: Duration) -> Vec<(String, Value)> {
        let mut events = Vec::new();
        while let Some(e) = self.next(within).await {
            events.push(e);
        }
        events
    }
}
