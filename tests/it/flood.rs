//! The exporter's own HTTP server under a connection flood from other loopback addresses
//! (127.0.0.2 on): silent sockets, headers trickled a byte per second, idle keep-alive
//! connections, each reconnecting when cut. Scrapes from 127.0.0.1 must still answer promptly.
//! Each test is a row of `docs/reliability.md`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use krs_sandbox_sim::SimTask;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::{eventually, id, within, ConfigYaml, Process, Sandbox, Scrape};

/// Hostile sockets held open at once.
const FLOOD_SOCKETS: usize = 2_000;

/// How long a cut hostile socket waits before it connects again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// Scrapes taken during the flood, one every [`SCRAPE_EVERY`].
const SCRAPES: usize = 12;
const SCRAPE_EVERY: Duration = Duration::from_millis(500);

/// Every scrape must answer within this, well inside Prometheus' default 10 s timeout.
const SCRAPE_BUDGET: Duration = Duration::from_secs(2);

/// One flood at a time: two at once would measure each other.
static ONE_FLOOD: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// What one hostile socket does once connected.
#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// Sends nothing.
    Silent,
    /// Sends request headers one byte per second.
    Trickle,
    /// Sends one complete request, reads the answer, then sits on the kept-alive connection.
    IdleKeepAlive,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_and_idle_connections_from_one_peer_cannot_delay_scrapes_from_another() {
    within(async {
        let s = scrapes_under_flood(1).await;
        assert!(
            rejected(&s, "per_peer_limit") > 0.0,
            "the flood's excess connections are counted as refused"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_many_peers_that_fills_the_table_is_evicted_to_let_scrapes_in() {
    within(async {
        // 32 peers × 62 sockets: each under its per-peer limit, together four times the table.
        let s = scrapes_under_flood(32).await;
        assert!(
            rejected(&s, "evicted_idle") > 0.0,
            "idle connections were evicted to make room"
        );
    })
    .await;
}

fn rejected(s: &Scrape, reason: &str) -> f64 {
    s.value_or_zero("krs_web_connections_rejected_total", &[("reason", reason)])
}

/// Floods a fresh exporter process with [`FLOOD_SOCKETS`] hostile sockets spread over `peers`
/// loopback addresses from 127.0.0.2 on, scrapes it from 127.0.0.1 [`SCRAPES`] times, asserts
/// every scrape answered 200 within [`SCRAPE_BUDGET`], and returns a scrape taken after.
async fn scrapes_under_flood(peers: usize) -> Scrape {
    let _one = ONE_FLOOD.acquire().await.expect("never closed");
    let t = id(400);
    let sandbox = Sandbox::start(vec![SimTask::new(&t)]).await;
    let p = Process::spawn(&ConfigYaml::new(&sandbox.url(), &[&t]).render(), &[]);
    p.wait_healthy().await;
    let addr = SocketAddr::from(([127, 0, 0, 1], p.port));

    let sockets = FLOOD_SOCKETS.min(socket_budget());
    let stop = CancellationToken::new();
    let connected = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..sockets)
        .map(|i| {
            let kind = [Hostile::Silent, Hostile::Trickle, Hostile::IdleKeepAlive][i % 3];
            let from = [127, 0, 0, 2 + (i % peers) as u8];
            tokio::spawn(hostile_peer(
                from,
                addr,
                kind,
                Arc::clone(&connected),
                stop.clone(),
            ))
        })
        .collect();
    eventually("most hostile sockets have connected", || async {
        (connected.load(Ordering::Relaxed) >= sockets * 3 / 4).then_some(())
    })
    .await;

    // A fresh connection per scrape: the hardest case, it has to get through accept.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("HTTP client");
    let url = format!("http://127.0.0.1:{}/metrics", p.port);
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for n in 0..SCRAPES {
        let start = Instant::now();
        let answer = tokio::time::timeout(SCRAPE_BUDGET, async {
            let r = client.get(&url).send().await?;
            let status = r.status().as_u16();
            r.text().await.map(|_| status)
        })
        .await;
        let took = start.elapsed();
        match answer {
            Ok(Ok(200)) => latencies.push(took),
            Ok(Ok(status)) => failures.push(format!("scrape {n}: status {status}")),
            Ok(Err(e)) => failures.push(format!("scrape {n}: {e}")),
            Err(_) => failures.push(format!("scrape {n}: no answer within {SCRAPE_BUDGET:?}")),
        }
        tokio::time::sleep(SCRAPE_EVERY.saturating_sub(took)).await;
    }
    let max = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "measured: flood of {sockets} sockets from {peers} address(es): {} of {SCRAPES} scrapes \
         answered 200 within {SCRAPE_BUDGET:?}, max {max:?} (all: {latencies:?}); {} hostile \
         connects",
        latencies.len(),
        connected.load(Ordering::Relaxed),
    );
    assert!(
        failures.is_empty(),
        "scrapes failed under the flood: {failures:#?}"
    );

    let r = client.get(&url).send().await.expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let after = Scrape::parse(&r.text().await.expect("body"));
    stop.cancel();
    for task in flood {
        let _ = task.await;
    }
    after
}

/// One hostile socket from `from`, reconnecting whenever the exporter cuts it.
async fn hostile_peer(
    from: [u8; 4],
    addr: SocketAddr,
    kind: Hostile,
    connected: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => return,
            () = async {
                if let Ok(stream) = connect_from(from, addr).await {
                    connected.fetch_add(1, Ordering::Relaxed);
                    behave(kind, stream).await;
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
            } => {}
        }
    }
}

async fn connect_from(local: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((local, 0)))?;
    socket.connect(to).await
}

/// Misbehaves on `stream` until the exporter closes it.
async fn behave(kind: Hostile, mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    match kind {
        Hostile::Silent => {}
        Hostile::Trickle => {
            let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            let (mut read, mut write) = stream.split();
            for byte in request.iter().chain(std::iter::repeat(&b'a')) {
                tokio::select! {
                    r = read.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        if write.write_all(std::slice::from_ref(byte)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        Hostile::IdleKeepAlive => {
            let request = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n";
            if stream.write_all(request).await.is_err() {
                return;
            }
        }
    }
    // Hold the connection (reading whatever comes) until the exporter closes it.
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Sockets this process may open for the flood: its open-file soft limit minus headroom for
/// the simulator, the scrapes and the test harness.
fn socket_budget() -> usize {
    let limit = std::process::Command::new("sh")
        .args(["-c", "ulimit -n"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| match s.trim() {
            "unlimited" => usize::MAX,
            n => n.parse().unwrap_or(1024),
        })
        .unwrap_or(1024);
    let budget = limit.saturating_sub(256);
    if budget < FLOOD_SOCKETS {
        eprintln!("open-file limit {limit}: flooding with {budget} sockets, not {FLOOD_SOCKETS}");
    }
    budget
}
