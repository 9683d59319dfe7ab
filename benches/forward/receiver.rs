//! The forwarding receiver: a plain HTTP server that checks each delivery's
//! signature and records its changes and when they arrived.

// The benchmark's settings, types and imports.
use super::*;

pub type Received = Arc<Mutex<HashMap<String, Subscriber>>>;

/// The receiver on a thread and runtime of its own: its port.
pub fn start_receiver(received: Received) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("a listener");
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(receive(socket, received.clone()));
            }
        });
    });
    Ok(port)
}

/// Answers 200 to every delivery on a keep-alive connection, recording it.
pub async fn receive(mut socket: TcpStream, received: Received) {
    let mut buffer = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 65536];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        let path = head
            .split(' ')
            .nth(1)
            .unwrap_or("/")
            .trim_start_matches('/')
            .to_owned();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    l.strip_prefix(name)
                        .map(|v| v.trim_start_matches(':').trim().to_owned())
                })
                .unwrap_or_default()
        };
        let length: usize = header("content-length").parse().unwrap_or(0);
        let id = header("webhook-id");
        buffer.drain(..end + 4);
        while buffer.len() < length {
            let mut chunk = [0u8; 65536];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buffer.drain(..length).collect();
        record(&received, &path, &id, &body);
        if socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A delivery as the receiver reads it: borrowed strings, no copies.
#[derive(serde::Deserialize)]
pub struct Delivery<'a> {
    #[serde(borrow)]
    changes: Vec<Change<'a>>,
}

#[derive(serde::Deserialize)]
pub struct Change<'a> {
    position: &'a str,
    message_id: &'a str,
    changed_at: &'a str,
}

/// Every change's order and webhook-id is checked; the lag of every tenth
/// (parsing a time is most of what the receiver would spend).
pub fn record(received: &Received, path: &str, id: &str, body: &[u8]) {
    let now = Instant::now();
    let wall = chrono::Utc::now();
    let delivery: Delivery = serde_json::from_slice(body).expect("a JSON delivery");
    let mut got = received.lock().unwrap();
    let s = got.entry(path.to_owned()).or_default();
    // A delivery sent again under its id (after a crash) counts once.
    if !s.ids.insert(id.to_owned()) {
        return;
    }
    for change in delivery.changes {
        let (xid, seq) = change.position.split_once('-').expect("a position");
        let position = (xid.parse().unwrap(), seq.parse().unwrap());
        // Deliveries sent again under their id were skipped above.
        if !s.positions.insert(position) {
            s.repeated += 1;
            continue;
        }
        if position < s.last {
            s.out_of_order += 1;
        }
        s.last = position;
        s.messages.push(change.message_id.to_owned());
        if s.messages.len().is_multiple_of(10) {
            let changed: chrono::DateTime<chrono::Utc> = change.changed_at.parse().unwrap();
            s.lags.push((wall - changed).to_std().unwrap_or_default());
        }
        s.received_at.push(now);
    }
}
