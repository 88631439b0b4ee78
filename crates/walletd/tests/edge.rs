//! The HTTP edge under hostile clients: headers that never end, bodies that trickle, idle
//! connections, and more connections than the server allows. Normal clients are served throughout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::time::{Duration, Instant};

use testkit::{Backend, TestApp, assert_problem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the server closes the connection (or `deadline` passes: then panics); returns what
/// it sent and how long it took.
async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + deadline).into(), stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server kept the connection open for {deadline:?}; it sent {:?}",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), start.elapsed()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A request on a new connection is answered 200.
async fn served(app: &TestApp) -> bool {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    client.get(app.url("/health/live")).send().await.is_ok_and(|r| r.status() == 200)
}

#[tokio::test]
async fn slow_clients_are_closed_and_normal_clients_are_served_meanwhile() {
    // Timeouts long enough that the 20 normal requests below fit in them on a loaded machine (at
    // 500 ms a busy CI machine closed the trickled body before its last pieces were written).
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.http_header_timeout = Duration::from_secs(2);
        s.http_body_timeout = Duration::from_secs(2);
    })
    .await;

    // Headers that never end, a body that arrives in pieces and never completes, and a connection
    // that says nothing.
    let mut endless_headers = connect(&app).await;
    // The header clock starts at the connection: the time taken below by the normal clients counts.
    let opened = Instant::now();
    endless_headers.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
    let mut trickle = connect(&app).await;
    let head =
        "POST /v1/auth/nonce HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{";
    trickle.write_all(head.as_bytes()).await.unwrap();
    let mut silent = connect(&app).await;

    // While they hang, everyone else is answered.
    for _ in 0..20 {
        assert!(served(&app).await, "a normal client was not served beside slow ones");
    }
    let trickling = tokio::spawn(async move {
        // A few more pieces, then nothing: 4 of the 100 announced bytes ever arrive. (Nothing is
        // sent after them, so nothing is left unread when the server closes.)
        for _ in 0..3 {
            trickle.write_all(b" ").await.unwrap();
            trickle.flush().await.unwrap();
        }
        read_until_closed(&mut trickle, Duration::from_secs(10)).await
    });

    let (sent, _) = read_until_closed(&mut endless_headers, Duration::from_secs(10)).await;
    let took = opened.elapsed();
    assert!(sent.is_empty() || sent.starts_with("HTTP/1.1 408"), "endless headers got {sent:?}");
    assert!(took >= Duration::from_millis(1900), "closed {took:?} after it opened, before the header timeout");
    let (sent, _) = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(sent.is_empty() || sent.starts_with("HTTP/1.1 408"), "a silent connection got {sent:?}");
    let (sent, _) = trickling.await.unwrap();
    assert!(sent.starts_with("HTTP/1.1 408"), "a trickled body got {sent:?}");
    assert!(sent.contains("REQUEST_TIMEOUT"), "{sent}");

    // A kept-alive connection that goes idle is closed too.
    let mut idle = connect(&app).await;
    idle.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let (sent, _) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    assert!(served(&app).await);
    assert!(app.metric("http_timeouts_total", &["kind=\"body\""]).await >= 1.0);
}

#[tokio::test]
async fn past_the_connection_cap_a_client_gets_503_with_retry_after_until_one_closes() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.http_max_connections = 4).await;
    // Four kept-alive connections, each answered once, hold the four places.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = connect(&app).await;
        c.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(c);
    }
    // A fifth: refused at once, with a problem and a delay to retry after.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let res = client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    assert!(!served(&app).await);
    assert_problem(res, 503, "UNAVAILABLE").await;
    assert!(app.metric("http_connections_refused_total", &[]).await >= 1.0);

    // One place frees up: the next client is served.
    drop(held.pop());
    let ok = testkit::wait_until(Duration::from_secs(10), || served(&app)).await;
    assert!(ok, "a freed place was not given to the next client");
}
