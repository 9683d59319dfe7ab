//! The callback load: connections posting new messages back to back, each
//! to one of the streams' user numbers.

use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{read_answer, report_request};
use crate::{CHANNEL, PASSWORD};

pub type Acked = (Vec<(String, usize, Instant)>, Vec<Duration>, usize);

/// `connections` callback connections at once for `duration`, their
/// results together.
pub async fn load(
    port: u16,
    connections: usize,
    users: usize,
    phase: usize,
    duration: Duration,
) -> anyhow::Result<Acked> {
    let tasks: Vec<_> = (0..connections)
        .map(|c| tokio::spawn(callbacks(port, c, connections, users, phase, duration)))
        .collect();
    let (mut acked, mut latencies, mut errors) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (a, l, e) = t.await??;
        acked.extend(a);
        latencies.extend(l);
        errors += e;
    }
    Ok((acked, latencies, errors))
}

/// One keep-alive connection posting new messages back to back, each to
/// user number `u<n>` for n below `users`.
async fn callbacks(
    port: u16,
    connection: usize,
    connections: usize,
    users: usize,
    phase: usize,
    duration: Duration,
) -> anyhow::Result<Acked> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let deadline = Instant::now() + duration;
    let (mut acked, mut latencies, mut errors) = (Vec::new(), Vec::new(), 0);
    let mut n = 0usize;
    while Instant::now() < deadline {
        let user = (connection + n * connections) % users;
        let id = format!("p{phase}-c{connection}-{n}");
        n += 1;
        let body = format!(
            r#"{{"message_id":"{id}","sender":"86173xxxx4526","user_number":"u{user}","status":"delivered"}}"#
        );
        let sent = Instant::now();
        stream
            .get_mut()
            .write_all(report_request(CHANNEL, PASSWORD, &body).as_bytes())
            .await?;
        let ok = read_answer(&mut stream).await? == 200;
        let answered = Instant::now();
        latencies.push(answered - sent);
        if ok {
            acked.push((id, user, answered));
        } else {
            errors += 1;
        }
    }
    Ok((acked, latencies, errors))
}
