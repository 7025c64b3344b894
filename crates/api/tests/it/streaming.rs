//! Streamed uploads and downloads: flat memory, idle timeouts, clear errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use bosun_api::{ApiError, Auth, Body, Client, Method, Timeouts};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{peak_rss_kib, serve};

const CHUNK: usize = 64 << 10;
const TOTAL: u64 = 64 << 20;

/// Chunk `index` of the test pattern: every byte tells its position, so a reordered, dropped or
/// duplicated chunk shows.
fn pattern_chunk(index: u64) -> Bytes {
    Bytes::from(vec![(index % 251) as u8; CHUNK])
}

/// `TOTAL` bytes in `CHUNK`s, counting what was produced into `produced`.
fn pattern_stream(
    produced: Arc<AtomicU64>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(0u64, move |index| {
        let produced = produced.clone();
        async move {
            if index * CHUNK as u64 >= TOTAL {
                return None;
            }
            produced.fetch_add(CHUNK as u64, Ordering::SeqCst);
            Some((Ok(pattern_chunk(index)), index + 1))
        }
    })
}

fn client(addr: std::net::SocketAddr, idle: Duration) -> Client {
    Client::with_timeouts(
        &format!("http://{addr}"),
        Timeouts {
            request: Duration::from_secs(60),
            idle,
        },
    )
    .expect("client")
}

/// Reads a raw request's head (up to the blank line) and returns it.
async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await.expect("read head") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn a_64_mib_upload_streams_with_flat_memory() {
    let produced = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let most_ahead = Arc::new(AtomicU64::new(0));
    let app = {
        let (produced, received, most_ahead) =
            (produced.clone(), received.clone(), most_ahead.clone());
        Router::new().route(
            "/blob",
            put(move |headers: HeaderMap, request: Request| async move {
                assert_eq!(
                    headers.get("content-length").and_then(|v| v.to_str().ok()),
                    Some(TOTAL.to_string().as_str()),
                    "a sized body announces its length"
                );
                let mut body = request.into_body().into_data_stream();
                let mut position = 0u64;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.expect("body chunk");
                    for (offset, byte) in chunk.iter().enumerate() {
                        let at = position + offset as u64;
                        assert_eq!(*byte, ((at / CHUNK as u64) % 251) as u8, "byte {at}");
                    }
                    position += chunk.len() as u64;
                    received.store(position, Ordering::SeqCst);
                    let ahead = produced.load(Ordering::SeqCst) - position;
                    most_ahead.fetch_max(ahead, Ordering::SeqCst);
                    // A slow server: the client must wait for it, not buffer ahead.
                    if position % (1 << 20) == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                axum::Json(serde_json::json!({ "length": position }))
            }),
        )
    };
    let addr = serve(app).await;
    let client = client(addr, Duration::from_secs(10));
    let before = peak_rss_kib();
    let response = client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "application/octet-stream",
            Body::sized(TOTAL, pattern_stream(produced.clone())),
        )
        .await
        .expect("upload");
    let answer: serde_json::Value = response.json().expect("json answer");
    assert_eq!(answer["length"], TOTAL);
    assert_eq!(received.load(Ordering::SeqCst), TOTAL);
    let ahead = most_ahead.load(Ordering::SeqCst);
    let after = peak_rss_kib();
    eprintln!(
        "upload: producer at most {} KiB ahead of the server; VmHWM {before:?} -> {after:?} KiB",
        ahead >> 10
    );
    // Socket buffers and hyper's write buffer hold a few MiB on loopback; 64 MiB would mean
    // the body was buffered whole.
    assert!(ahead < 16 << 20, "the producer ran {ahead} bytes ahead");
    if let (Some(before), Some(after)) = (before, after) {
        // Whole-body buffering would add 64 MiB; other tests of this binary may share the
        // process, so the bound leaves them room.
        assert!(
            after - before < 40 << 10,
            "VmHWM grew by {} KiB",
            after - before
        );
    }
}

#[tokio::test]
async fn a_64_mib_download_streams_with_flat_memory() {
    let produced = Arc::new(AtomicU64::new(0));
    let app = {
        let produced = produced.clone();
        Router::new().route(
            "/blob",
            get(move || async move { AxumBody::from_stream(pattern_stream(produced)) }),
        )
    };
    let addr = serve(app).await;
    let client = client(addr, Duration::from_secs(10));
    let mut download = client
        .download(Method::GET, "/blob", &Auth::None)
        .await
        .expect("download");
    assert_eq!(download.status(), StatusCode::OK);
    let mut position = 0u64;
    let mut most_ahead = 0u64;
    while let Some(chunk) = download.chunk().await.expect("chunk") {
        for (offset, byte) in chunk.iter().enumerate() {
            let at = position + offset as u64;
            assert_eq!(*byte, ((at / CHUNK as u64) % 251) as u8, "byte {at}");
        }
        position += chunk.len() as u64;
        most_ahead = most_ahead.max(produced.load(Ordering::SeqCst) - position);
        if position % (1 << 20) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(position, TOTAL);
    assert_eq!(download.received(), TOTAL);
    eprintln!(
        "download: server at most {} KiB ahead of the reader; VmHWM {:?} KiB",
        most_ahead >> 10,
        peak_rss_kib()
    );
    assert!(
        most_ahead < 16 << 20,
        "the server ran {most_ahead} bytes ahead"
    );
}

#[tokio::test]
async fn a_download_copies_through_its_reader_and_honours_a_limit() {
    let app = Router::new().route(
        "/blob",
        get(|| async {
            AxumBody::from_stream(pattern_stream(Arc::new(AtomicU64::new(0))).take(16))
        }),
    );
    let addr = serve(app).await;
    let client = client(addr, Duration::from_secs(10));
    let download = client
        .download(Method::GET, "/blob", &Auth::None)
        .await
        .expect("download");
    let mut reader = download.into_reader();
    let copied = tokio::io::copy(&mut reader, &mut tokio::io::sink())
        .await
        .expect("copy");
    assert_eq!(copied, 16 * CHUNK as u64);

    let mut limited = client
        .download(Method::GET, "/blob", &Auth::None)
        .await
        .expect("download")
        .limit(CHUNK as u64 * 3 / 2);
    let err = loop {
        match limited.chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the limit was not enforced"),
            Err(err) => break err,
        }
    };
    assert!(matches!(err, ApiError::TooLong { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("GET http://{addr}/blob: the answer is longer than 98304 bytes")
    );
}

#[tokio::test]
async fn a_download_that_stalls_mid_body_hits_the_idle_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        read_head(&mut socket).await;
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
            .await
            .expect("write");
        // Holds the connection open without sending the rest.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    });
    let client = client(addr, Duration::from_millis(300));
    let mut download = client
        .download(Method::GET, "/blob", &Auth::None)
        .await
        .expect("the head arrives");
    assert_eq!(download.content_length(), Some(1000));
    assert_eq!(
        download.chunk().await.expect("first bytes").as_deref(),
        Some(&b"0123456789"[..])
    );
    let started = Instant::now();
    let err = download.chunk().await.expect_err("the stall must fail");
    let waited = started.elapsed();
    assert!(matches!(err, ApiError::Idle { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(
        err.to_string(),
        format!("GET http://{addr}/blob: nothing received for 300ms")
    );
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_slow_reader_is_not_taken_for_a_stalled_server() {
    let app = Router::new().route(
        "/blob",
        get(|| async {
            AxumBody::from_stream(pattern_stream(Arc::new(AtomicU64::new(0))).take(4))
        }),
    );
    let addr = serve(app).await;
    let client = client(addr, Duration::from_millis(200));
    let mut download = client
        .download(Method::GET, "/blob", &Auth::None)
        .await
        .expect("download");
    let mut total = 0;
    while let Some(chunk) = download.chunk().await.expect("a slow reader is fine") {
        total += chunk.len();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(total, 4 * CHUNK);
}

#[tokio::test]
async fn an_upload_the_server_stops_reading_hits_the_idle_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        read_head(&mut socket).await;
        // Reads nothing more: the socket buffers fill and the client must notice.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    });
    let client = client(addr, Duration::from_millis(300));
    let endless = futures_util::stream::repeat_with(|| Ok::<_, std::io::Error>(pattern_chunk(7)));
    let started = Instant::now();
    let err = client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "application/octet-stream",
            Body::stream(endless),
        )
        .await
        .expect_err("the stall must fail");
    assert!(matches!(err, ApiError::Idle { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("PUT http://{addr}/blob: nothing sent for 300ms")
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_upload_without_an_answer_hits_the_idle_timeout() {
    let app = Router::new().route(
        "/blob",
        put(|request: Request| async move {
            let mut body = request.into_body().into_data_stream();
            while body.next().await.is_some() {}
            tokio::time::sleep(Duration::from_secs(30)).await;
            "too late"
        }),
    );
    let addr = serve(app).await;
    let client = client(addr, Duration::from_millis(300));
    let body =
        futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(pattern_chunk(1))));
    let err = client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "application/octet-stream",
            Body::stream(body),
        )
        .await
        .expect_err("no answer must fail");
    assert_eq!(
        err.to_string(),
        format!("PUT http://{addr}/blob: nothing answered for 300ms")
    );
}

#[tokio::test]
async fn a_slow_upload_source_is_not_taken_for_a_stalled_server() {
    let app = Router::new().route(
        "/blob",
        put(|request: Request| async move {
            let mut body = request.into_body().into_data_stream();
            let mut total = 0;
            while let Some(chunk) = body.next().await {
                total += chunk.expect("chunk").len();
            }
            axum::Json(serde_json::json!({ "length": total }))
        }),
    );
    let addr = serve(app).await;
    let client = client(addr, Duration::from_millis(200));
    let slow = futures_util::stream::unfold(0, |index| async move {
        if index == 3 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some((Ok::<_, std::io::Error>(pattern_chunk(index)), index + 1))
    });
    let response = client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "application/octet-stream",
            Body::stream(slow),
        )
        .await
        .expect("a slow source is fine");
    let answer: serde_json::Value = response.json().expect("json");
    assert_eq!(answer["length"], 3 * CHUNK);
}

#[tokio::test]
async fn upload_sources_that_fail_or_lie_about_their_length_name_the_problem() {
    let app = Router::new().route(
        "/blob",
        put(|request: Request| async move {
            let mut body = request.into_body().into_data_stream();
            while body.next().await.is_some() {}
            "ok"
        }),
    );
    let addr = serve(app).await;
    let client = client(addr, Duration::from_secs(10));
    let short = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"12345"))]);
    let err = client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "text/plain",
            Body::sized(10, short),
        )
        .await
        .expect_err("a short source must fail");
    assert_eq!(
        err.to_string(),
        format!(
            "PUT http://{addr}/blob: reading the upload: the source ended after 5 of its 10 bytes"
        )
    );
    assert!(!err.is_retryable());

    let long = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"12345"))]);
    let err = client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "text/plain",
            Body::sized(3, long),
        )
        .await
        .expect_err("a long source must fail");
    assert_eq!(
        err.to_string(),
        format!(
            "PUT http://{addr}/blob: reading the upload: the source gave more than its 3 bytes"
        )
    );

    let failing = futures_util::stream::iter([
        Ok(Bytes::from_static(b"12345")),
        Err(std::io::Error::other("disk on fire")),
    ]);
    let err = client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "text/plain",
            Body::stream(failing),
        )
        .await
        .expect_err("a failing source must fail");
    assert_eq!(
        err.to_string(),
        format!("PUT http://{addr}/blob: reading the upload: disk on fire")
    );

    // A reader source works end to end.
    let reader = std::io::Cursor::new(vec![b'x'; 100_000]);
    client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "text/plain",
            Body::reader(reader, 8192),
        )
        .await
        .expect("reader upload");
}

#[tokio::test]
async fn error_answers_of_streamed_calls_are_status_errors_with_the_message() {
    let app = Router::new().route(
        "/blob",
        get(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({ "message": "no such blob" })),
            )
        })
        .put(|| async {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(serde_json::json!({ "message": "the archive is over 10 GiB" })),
            )
        }),
    );
    let addr = serve(app).await;
    let client = client(addr, Duration::from_secs(10));
    let err = client
        .download(Method::GET, "/blob", &Auth::None)
        .await
        .expect_err("404");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(
        err.to_string(),
        format!("GET http://{addr}/blob: 404 Not Found: no such blob")
    );
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
    let err = client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "text/plain",
            Body::stream(body),
        )
        .await
        .expect_err("413");
    assert_eq!(err.status(), Some(StatusCode::PAYLOAD_TOO_LARGE));
    assert!(
        err.to_string().ends_with(": the archive is over 10 GiB"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_refusing_an_upload_early_is_heard_over_the_unsent_body() {
    let app = Router::new().route(
        "/blob",
        put(|| async {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(serde_json::json!({ "message": "the archive is over 10 GiB" })),
            )
        }),
    );
    let addr = serve(app).await;
    let client = client(addr, Duration::from_secs(5));
    let produced = Arc::new(AtomicU64::new(0));
    let err = client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "application/octet-stream",
            Body::sized(TOTAL, pattern_stream(produced.clone())),
        )
        .await
        .expect_err("413");
    eprintln!(
        "refused after {} KiB produced: {err}",
        produced.load(Ordering::SeqCst) >> 10
    );
    assert_eq!(err.status(), Some(StatusCode::PAYLOAD_TOO_LARGE), "{err}");
    assert!(
        err.to_string().ends_with(": the archive is over 10 GiB"),
        "{err}"
    );
}

#[tokio::test]
async fn a_channel_body_carries_backpressure_to_its_sender_and_fails_if_dropped_early() {
    let received = Arc::new(AtomicU64::new(0));
    let app = {
        let received = received.clone();
        Router::new().route(
            "/blob",
            put(move |request: Request| async move {
                let mut body = request.into_body().into_data_stream();
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else {
                        return StatusCode::BAD_REQUEST;
                    };
                    received.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                StatusCode::NO_CONTENT
            }),
        )
    };
    let addr = serve(app).await;
    let client = client(addr, Duration::from_secs(10));

    let (sender, body) = Body::sized_channel(TOTAL / 4, 4);
    let sent = Arc::new(AtomicU64::new(0));
    let feeder = {
        let sent = sent.clone();
        let received = received.clone();
        tokio::spawn(async move {
            let mut most_ahead = 0;
            for index in 0..(TOTAL / 4) / CHUNK as u64 {
                sender.send(pattern_chunk(index)).await.expect("send");
                let total = sent.fetch_add(CHUNK as u64, Ordering::SeqCst) + CHUNK as u64;
                most_ahead = u64::max(most_ahead, total - received.load(Ordering::SeqCst));
            }
            sender.finish().await;
            most_ahead
        })
    };
    let response = client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "application/octet-stream",
            body,
        )
        .await
        .expect("channel upload");
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    let most_ahead = feeder.await.expect("feeder");
    assert_eq!(received.load(Ordering::SeqCst), TOTAL / 4);
    assert!(
        most_ahead < 16 << 20,
        "the sender ran {most_ahead} bytes ahead"
    );

    let (sender, body) = Body::channel(4);
    let feeder = tokio::spawn(async move {
        sender
            .send(Bytes::from_static(b"half an archive"))
            .await
            .expect("send");
        // Dropped without finish: a source that died.
    });
    let err = client
        .upload(
            Method::PUT,
            "/blob",
            &Auth::None,
            "application/octet-stream",
            body,
        )
        .await
        .expect_err("a dropped sender must fail the upload");
    feeder.await.expect("feeder");
    assert_eq!(
        err.to_string(),
        format!(
            "PUT http://{addr}/blob: reading the upload: the source stopped before the end of its data"
        )
    );
}

#[test]
fn clients_bodies_and_downloads_cross_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Client>();
    send_sync::<bosun_api::BodySender>();
    send::<Body>();
    send::<bosun_api::Download>();
}

#[tokio::test]
async fn a_refused_connection_is_told_apart_from_one_that_fails_later() {
    // Nothing listens on a port just freed: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let client = Client::new(&format!("http://127.0.0.1:{port}")).expect("client");
    let err = client
        .send(Method::GET, "/x", &Auth::None, None, None)
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(err, ApiError::Transport { refused: true, .. }),
        "{err:?}"
    );

    // A server that accepts and closes without answering: a transport error, not refused.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let client = Client::new(&format!("http://{address}")).expect("client");
    let err = client
        .send(Method::GET, "/x", &Auth::None, None, None)
        .await
        .expect_err("closed without an answer");
    assert!(
        matches!(err, ApiError::Transport { refused: false, .. }),
        "{err:?}"
    );
}
