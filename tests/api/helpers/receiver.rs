//! A back-office system for the forwarding tests: plain HTTP/1.1 on
//! 127.0.0.1, answering each request as its script says next (200 once the
//! script is used up), recording every request it got.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// base64 of 32 bytes of 42: the tests' forward.secret_key.
pub const KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

/// Forwarding settings for a `serve` or a command of the tests: the key,
/// and the receiver on 127.0.0.1 allowed.
pub const CLI_ENV: &[(&str, &str)] = &[
    ("KOOSTATUS_FORWARD__SECRET_KEY", KEY),
    ("KOOSTATUS_FORWARD__ALLOW_PRIVATE_TARGETS", "true"),
];

#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    /// Never answers (until the test ends).
    Hang,
    /// Closes the connection without answering.
    Close,
    /// 302 to this path of the receiver.
    Redirect(&'static str),
    /// 200 announcing 100 MiB of body, sending 128 KiB of it, then nothing.
    Huge,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// What it was answered.
    pub answer: Answer,
}

impl Request {
    pub fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Positions of the changes it carried.
    pub fn positions(&self) -> Vec<String> {
        self.json()["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["position"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn accepted(&self) -> bool {
        matches!(self.answer, Answer::Status(200..=299) | Answer::Huge)
    }

    /// Checks the Standard Webhooks signature with the printed secret.
    pub fn verifies(&self, secret: &str) -> bool {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        let signed = format!(
            "{}.{}.",
            self.headers["webhook-id"], self.headers["webhook-timestamp"]
        );
        mac.update(signed.as_bytes());
        mac.update(&self.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.headers["webhook-signature"]
            .split(' ')
            .any(|s| s == expected)
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    requests: Vec<Request>,
    in_flight: usize,
    most_in_flight: usize,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    pub async fn start(script: impl IntoIterator<Item = Answer>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/koo", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            script: script.into_iter().collect(),
            ..State::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, shared.clone()));
            }
        });
        Receiver { url, state }
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    /// Answers 200 from now on.
    pub fn clear_script(&self) {
        self.state.lock().unwrap().script.clear();
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests that were being answered at the same time, at most.
    pub fn most_in_flight(&self) -> usize {
        self.state.lock().unwrap().most_in_flight
    }

    /// Positions of every change a 2xx accepted, in arrival order.
    pub fn accepted_positions(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.accepted())
            .flat_map(|r| r.positions())
            .collect()
    }

    /// As [`Receiver::accepted_positions`], a delivery accepted again under
    /// its webhook-id (after a crash) counted once, as a receiver that
    /// drops repeated ids sees them.
    pub fn delivered_positions(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.requests()
            .iter()
            .filter(|r| r.accepted() && seen.insert(r.id().to_owned()))
            .flat_map(|r| r.positions())
            .collect()
    }

    /// Waits until `n` changes were accepted, at most `within`.
    pub async fn wait_accepted(&self, n: usize, within: Duration) {
        let started = Instant::now();
        while self.accepted_positions().len() < n {
            assert!(
                started.elapsed() < within,
                "{} of {n} changes accepted within {within:?}; requests: {:?}",
                self.accepted_positions().len(),
                self.requests()
                    .iter()
                    .map(|r| (&r.answer, r.positions().len()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(mut socket: TcpStream, state: Arc<Mutex<State>>) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut socket, &mut buffer).await else {
            return;
        };
        let answer = {
            let mut state = state.lock().unwrap();
            let answer = state.script.pop_front().unwrap_or(Answer::Status(200));
            state.in_flight += 1;
            state.most_in_flight = state.most_in_flight.max(state.in_flight);
            state.requests.push(Request {
                answer: answer.clone(),
                ..request
            });
            answer
        };
        let done = || state.lock().unwrap().in_flight -= 1;
        let head = |status: u16, extra: &str| {
            format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\n{extra}\r\n")
        };
        match answer {
            Answer::Status(code) => {
                let written = socket.write_all(head(code, "").as_bytes()).await;
                done();
                if written.is_err() {
                    return;
                }
            }
            Answer::Redirect(to) => {
                let _ = socket
                    .write_all(head(302, &format!("location: {to}\r\n")).as_bytes())
                    .await;
                done();
            }
            Answer::Close => {
                done();
                return;
            }
            Answer::Hang => {
                // The client gives up (its timeout) and closes; then so do we.
                let _ = socket.read(&mut [0u8; 1]).await;
                done();
                return;
            }
            Answer::Huge => {
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 104857600\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&vec![b'x'; 128 * 1024]).await;
                done();
                let _ = socket.read(&mut [0u8; 1]).await;
                return;
            }
        }
    }
}

/// One request off the connection; None when it closes.
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..end].to_vec()).unwrap();
    buffer.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .map_or(0, |l| l.parse().unwrap());
    while buffer.len() < length {
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = buffer.drain(..length).collect();
    Some(Request {
        path,
        headers,
        body,
        answer: Answer::Status(0),
    })
}
