//! Uploads and downloads through the task-agent's link, with the test playing the launch-agent
//! on the other end of a real socketpair: answers routed by stream id to the step that asked,
//! download data delivered with backpressure, `NotFound`, early refusals, abandoning, and a
//! clear error for a stream that was never opened.

use std::time::Duration;

use bosun_protocol::{BlobKind, Connection, FrameCodec, Incoming, Message, UploadOutcome};
use bosun_task_agent::link::{self, Control, DownloadError, Fetched, Outbox, UploadStop};
use bytes::Bytes;
use tokio::net::UnixStream;

use crate::harness::PATIENCE;

struct Pair {
    out: Outbox,
    control: tokio::sync::watch::Receiver<Control>,
    link: tokio::task::JoinHandle<Result<(), bosun_protocol::ProtocolError>>,
    /// The launch-agent's end.
    launch: Connection<UnixStream>,
}

fn pair() -> Pair {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (out, control, link) = link::spawn(Connection::new(ours, FrameCodec::default()));
    Pair {
        out,
        control,
        link,
        launch: Connection::new(theirs, FrameCodec::default()),
    }
}

async fn recv(conn: &mut Connection<UnixStream>) -> Incoming {
    tokio::time::timeout(PATIENCE, conn.recv())
        .await
        .expect("nothing from the task-agent's link in time")
        .expect("bad frame from the link")
        .expect("the link closed the socket")
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn a_download_is_answered_with_found_data_and_end() {
    let Pair {
        out, mut launch, ..
    } = pair();
    let expected = payload(3 * 1024 * 1024 + 17);
    let step = tokio::spawn(async move {
        let fetched = out
            .download(BlobKind::Cache, vec!["v1-deps-".into(), "v1-".into()])
            .await
            .unwrap();
        let Fetched::Found(mut download) = fetched else {
            panic!("expected the download to be found");
        };
        assert_eq!(download.key, "v1-deps-abc");
        assert_eq!(download.size, Some(3 * 1024 * 1024 + 17));
        let mut got = Vec::new();
        while let Some(chunk) = download.next_chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        got
    });
    let stream = match recv(&mut launch).await {
        Incoming::Message(Message::Download { stream, kind, keys }) => {
            assert_eq!(kind, BlobKind::Cache);
            assert_eq!(keys, ["v1-deps-", "v1-"]);
            assert_ne!(stream, 0);
            stream
        }
        other => panic!("expected a download, got {other:?}"),
    };
    launch
        .send(&Message::Found {
            stream,
            key: "v1-deps-abc".into(),
            size: Some(expected.len() as u64),
        })
        .await
        .unwrap();
    launch
        .send_data(stream, Bytes::from(expected.clone()))
        .await
        .unwrap();
    launch
        .send(&Message::End {
            stream,
            error: None,
        })
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, step).await.unwrap().unwrap();
    assert!(got == expected, "downloaded bytes differ");
}

#[tokio::test]
async fn a_download_that_is_not_found_says_so() {
    let Pair {
        out, mut launch, ..
    } = pair();
    let step = tokio::spawn(async move { out.download(BlobKind::Workspace, vec![]).await });
    let Incoming::Message(Message::Download { stream, .. }) = recv(&mut launch).await else {
        panic!("expected a download");
    };
    launch.send(&Message::NotFound { stream }).await.unwrap();
    let fetched = tokio::time::timeout(PATIENCE, step).await.unwrap().unwrap();
    assert!(matches!(fetched, Ok(Fetched::NotFound)), "{fetched:?}");
}

#[tokio::test]
async fn an_aborted_download_is_an_error_naming_the_reason() {
    let Pair {
        out, mut launch, ..
    } = pair();
    let step = tokio::spawn(async move {
        let Ok(Fetched::Found(mut download)) = out.download(BlobKind::Artifact, vec![]).await
        else {
            panic!("expected the download to be found");
        };
        let first = download.next_chunk().await;
        (first, download.next_chunk().await)
    });
    let Incoming::Message(Message::Download { stream, .. }) = recv(&mut launch).await else {
        panic!("expected a download");
    };
    launch
        .send(&Message::Found {
            stream,
            key: "a".into(),
            size: None,
        })
        .await
        .unwrap();
    launch
        .send_data(stream, Bytes::from_static(b"half"))
        .await
        .unwrap();
    launch
        .send(&Message::End {
            stream,
            error: Some("the server went away".into()),
        })
        .await
        .unwrap();
    let (first, second) = tokio::time::timeout(PATIENCE, step).await.unwrap().unwrap();
    assert_eq!(first, Ok(Some(Bytes::from_static(b"half"))));
    let err = second.unwrap_err();
    assert!(matches!(err, DownloadError::Aborted { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("download stream {stream} was aborted: the server went away")
    );
}

/// A step that does not read its download stops the launch-agent's sending after a few chunks,
/// while the link still carries the step's log (no deadlock, no buffering of the whole object).
#[tokio::test]
async fn a_slow_reader_holds_the_sender_back_and_logs_still_flow() {
    let Pair {
        out, mut launch, ..
    } = pair();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let step_out = out.clone();
    let step = tokio::spawn(async move {
        let log = step_out.step_started(0, "restore".into()).await.unwrap();
        let Ok(Fetched::Found(mut download)) = step_out.download(BlobKind::Cache, vec![]).await
        else {
            panic!("expected the download to be found");
        };
        // Logging while the download waits must not block on it.
        step_out.text(log, "Restoring...\n").await.unwrap();
        go_rx.await.unwrap();
        let mut total = 0usize;
        while let Some(chunk) = download.next_chunk().await.unwrap() {
            total += chunk.len();
        }
        total
    });
    let log = match recv(&mut launch).await {
        Incoming::Message(Message::StepStarted { log, .. }) => log,
        other => panic!("expected step_started, got {other:?}"),
    };
    let Incoming::Message(Message::Download { stream, .. }) = recv(&mut launch).await else {
        panic!("expected a download");
    };
    assert!(
        stream > log,
        "stream ids increase: log {log}, download {stream}"
    );
    launch
        .send(&Message::Found {
            stream,
            key: "k".into(),
            size: None,
        })
        .await
        .unwrap();
    // Send 1 MiB chunks until the socket stops taking them.
    let chunk = Bytes::from(payload(1024 * 1024 - 16));
    let mut sent = 0usize;
    loop {
        let send = launch.send_data(stream, chunk.clone());
        match tokio::time::timeout(Duration::from_millis(500), send).await {
            Ok(result) => {
                result.unwrap();
                sent += 1;
                assert!(sent < 64, "64 MiB went out to a step that reads nothing");
            }
            // The chunk whose send timed out is in the connection's write buffer; it goes out
            // with the next send.
            Err(_) => break,
        }
    }
    // The step's own log line comes through while its download is stalled.
    match recv(&mut launch).await {
        Incoming::Data { stream: s, bytes } if s == log => {
            assert_eq!(&bytes[..], b"Restoring...\n");
        }
        other => panic!("expected the step's log, got {other:?}"),
    }
    go_tx.send(()).unwrap();
    for _ in 0..3 {
        launch.send_data(stream, chunk.clone()).await.unwrap();
    }
    launch
        .send(&Message::End {
            stream,
            error: None,
        })
        .await
        .unwrap();
    let total = tokio::time::timeout(PATIENCE, step).await.unwrap().unwrap();
    assert_eq!(total, (sent + 1 + 3) * chunk.len());
    assert!(sent <= 16, "{sent} MiB were taken before the step read any");
}

#[tokio::test]
async fn a_dropped_download_is_abandoned_and_the_rest_dropped() {
    let Pair {
        out,
        mut launch,
        link,
        ..
    } = pair();
    let step = tokio::spawn(async move {
        let fetched = out.download(BlobKind::Cache, vec![]).await.unwrap();
        drop(fetched);
        out
    });
    let Incoming::Message(Message::Download { stream, .. }) = recv(&mut launch).await else {
        panic!("expected a download");
    };
    launch
        .send(&Message::Found {
            stream,
            key: "k".into(),
            size: None,
        })
        .await
        .unwrap();
    let out = tokio::time::timeout(PATIENCE, step).await.unwrap().unwrap();
    launch
        .send_data(stream, Bytes::from_static(b"unwanted"))
        .await
        .unwrap();
    match recv(&mut launch).await {
        Incoming::Message(Message::Abandon { stream: s, reason }) => {
            assert_eq!(s, stream);
            assert!(reason.contains("stopped reading"), "{reason}");
        }
        other => panic!("expected abandon, got {other:?}"),
    }
    // Late data and the end of an abandoned stream are not errors.
    launch
        .send_data(stream, Bytes::from_static(b"more"))
        .await
        .unwrap();
    launch
        .send(&Message::End {
            stream,
            error: Some("abandoned".into()),
        })
        .await
        .unwrap();
    drop(out);
    let result = tokio::time::timeout(PATIENCE, link).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn an_upload_streams_its_bytes_and_gets_its_outcome() {
    let Pair {
        out, mut launch, ..
    } = pair();
    let bytes = payload(2 * 1024 * 1024 + 5);
    let sent = bytes.clone();
    let step = tokio::spawn(async move {
        let mut upload = out
            .upload(BlobKind::Artifact, "dist/app.tar".into())
            .await
            .unwrap();
        for piece in sent.chunks(300_000) {
            upload.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        upload.finish().await
    });
    let stream = match recv(&mut launch).await {
        Incoming::Message(Message::Upload { stream, kind, name }) => {
            assert_eq!((kind, name.as_str()), (BlobKind::Artifact, "dist/app.tar"));
            stream
        }
        other => panic!("expected an upload, got {other:?}"),
    };
    let mut got = Vec::new();
    loop {
        match recv(&mut launch).await {
            Incoming::Data { stream: s, bytes } if s == stream => got.extend_from_slice(&bytes),
            Incoming::Message(Message::End { stream: s, error }) if s == stream => {
                assert_eq!(error, None);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got == bytes, "uploaded bytes differ");
    launch
        .send(&Message::Uploaded {
            stream,
            outcome: UploadOutcome::Stored,
        })
        .await
        .unwrap();
    let outcome = tokio::time::timeout(PATIENCE, step).await.unwrap().unwrap();
    assert_eq!(outcome, Ok(UploadOutcome::Stored));
}

#[tokio::test]
async fn an_upload_refused_early_stops_taking_bytes() {
    let Pair {
        out, mut launch, ..
    } = pair();
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel::<()>();
    let step = tokio::spawn(async move {
        let mut upload = out.upload(BlobKind::Cache, "v1-deps".into()).await.unwrap();
        refused_rx.await.unwrap();
        // The answer is on its way through the link; writes stop once it is in.
        let mut stopped = None;
        for _ in 0..100 {
            match upload.write(Bytes::from_static(b"x")).await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(stop) => {
                    stopped = Some(stop);
                    break;
                }
            }
        }
        (stopped, upload.finish().await)
    });
    let Incoming::Message(Message::Upload { stream, .. }) = recv(&mut launch).await else {
        panic!("expected an upload");
    };
    let message = "the server does not support cache uploads yet".to_owned();
    launch
        .send(&Message::Uploaded {
            stream,
            outcome: UploadOutcome::Failed {
                message: message.clone(),
            },
        })
        .await
        .unwrap();
    refused_tx.send(()).unwrap();
    // The task-agent still ends the stream, after whatever data was in flight.
    loop {
        match recv(&mut launch).await {
            Incoming::Data { stream: s, .. } if s == stream => {}
            Incoming::Message(Message::End { stream: s, .. }) if s == stream => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let (stopped, outcome) = tokio::time::timeout(PATIENCE, step).await.unwrap().unwrap();
    assert_eq!(stopped, Some(UploadStop::Answered));
    assert_eq!(outcome, Ok(UploadOutcome::Failed { message }));
}

#[tokio::test]
async fn data_for_a_stream_never_opened_breaks_the_link_with_a_clear_error() {
    let Pair {
        out,
        mut launch,
        link,
        control,
    } = pair();
    launch
        .send_data(99, Bytes::from_static(b"stray"))
        .await
        .unwrap();
    let err = tokio::time::timeout(PATIENCE, link)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a data frame for stream 99, which is not open"
    );
    assert_eq!(*control.borrow(), Control::Lost);
    assert!(out.download(BlobKind::Cache, vec![]).await.is_err());
}

#[tokio::test]
async fn an_answer_for_the_wrong_kind_of_stream_is_an_error() {
    let Pair {
        out,
        mut launch,
        link,
        ..
    } = pair();
    let _step = tokio::spawn(async move {
        let _upload = out.upload(BlobKind::Cache, "k".into()).await;
        std::future::pending::<()>().await;
    });
    let Incoming::Message(Message::Upload { stream, .. }) = recv(&mut launch).await else {
        panic!("expected an upload");
    };
    launch
        .send(&Message::Found {
            stream,
            key: "k".into(),
            size: None,
        })
        .await
        .unwrap();
    let err = tokio::time::timeout(PATIENCE, link)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("received `found` for stream {stream}")),
        "{err}"
    );
}
