//! The HTTP load: keep-alive connections posting valid callbacks back to
//! back, and the flood of wrong passwords beside them.

// The benchmark's settings, types and imports.
use super::*;

pub async fn http_load(port: u16, connections: usize, duration: Duration) -> anyhow::Result<Run> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| tokio::spawn(http_client(port, deadline, c as u64 + 1)))
        .collect();
    let mut run = Run::default();
    for t in tasks {
        let (latencies, acked, errors) = t.await??;
        run.latencies.extend(latencies);
        run.acked_at
            .extend(acked.iter().map(|(_, _, at)| at.duration_since(started)));
        run.acked
            .extend(acked.into_iter().map(|(id, status, _)| (id, status)));
        run.errors += errors;
    }
    run.reports_per_s = run.acked.len() as f64 / started.elapsed().as_secs_f64();
    run.latencies.sort();
    Ok(run)
}

pub type ClientResult = (Vec<Duration>, Vec<(String, Status, Instant)>, usize);

/// One keep-alive connection posting reports back to back.
pub async fn http_client(port: u16, deadline: Instant, seed: u64) -> anyhow::Result<ClientResult> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let (mut latencies, mut acked, mut errors) = (Vec::new(), Vec::new(), 0);
    while Instant::now() < deadline {
        let (id, status) = rng.report();
        let body = format!(
            r#"{{"message_id":"{id}","sender":"86173xxxx4526","user_number":"86187xxxx5632","status":"{status}"}}"#
        );
        let sent = Instant::now();
        stream
            .get_mut()
            .write_all(report_request(CHANNEL, PASSWORD, &body).as_bytes())
            .await?;
        let code = read_answer(&mut stream).await?;
        latencies.push(sent.elapsed());
        if code == 200 {
            acked.push((id, status, Instant::now()));
        } else {
            errors += 1;
        }
    }
    Ok((latencies, acked, errors))
}

/// Wrong passwords at `per_s` requests a second over 8 paced keep-alive
/// connections, as they arrive through a load balancer (all from this host,
/// so the per-client budget is spent at once). Returns how many were sent
/// and how many got an answer other than 401 or 429 (or none).
pub async fn flood(port: u16, per_s: u32, duration: Duration) -> anyhow::Result<(u64, usize)> {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let body = r#"{"message_id":"x","sender":"s","user_number":"u","status":"read"}"#;
                let request = report_request(CHANNEL, "a-wrong-guess", body);
                let mut tick = tokio::time::interval(Duration::from_secs_f64(8.0 / per_s as f64));
                let (mut sent, mut bad) = (0u64, 0usize);
                let mut connection: Option<BufReader<TcpStream>> = None;
                while Instant::now() < deadline {
                    tick.tick().await;
                    let stream = match connection.as_mut() {
                        Some(s) => s,
                        None => connection.insert(BufReader::new(
                            TcpStream::connect(("127.0.0.1", port)).await?,
                        )),
                    };
                    sent += 1;
                    // One answer: status line, headers, body by content-length.
                    let answered = async {
                        stream.get_mut().write_all(request.as_bytes()).await?;
                        let code = read_answer(stream).await?;
                        std::io::Result::Ok(code == 401 || code == 429)
                    }
                    .await;
                    match answered {
                        Ok(true) => {}
                        Ok(false) => bad += 1,
                        // Closed by the service: unanswered, which it must
                        // not do to a refused guess; reconnect and go on.
                        Err(_) => {
                            bad += 1;
                            connection = None;
                        }
                    }
                }
                anyhow::Ok((sent, bad))
            })
        })
        .collect();
    let (mut sent, mut bad) = (0, 0);
    for t in tasks {
        let (s, b) = t.await??;
        sent += s;
        bad += b;
    }
    Ok((sent, bad))
}
