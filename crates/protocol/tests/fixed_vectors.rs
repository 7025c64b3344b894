//! The exact bytes a connection puts on the wire, compared against fixed vectors, so every target
//! (s390x and ppc64le under qemu in CI, big- and little-endian) is held to the same encoding.

use bosun_protocol::{
    BlobKind, Connection, FrameCodec, Incoming, Message, StepStatus, UploadOutcome,
};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `StepFinished` as a control frame: length 94 (kind byte + 93 JSON bytes) big-endian, kind 1.
const STEP_FINISHED_JSON: &[u8] = br#"{"type":"step_finished","step":258,"status":"failed","exit_code":-2,"duration_ms":4294967301}"#;

fn step_finished() -> Message {
    Message::StepFinished {
        step: 258,
        status: StepStatus::Failed,
        exit_code: Some(-2),
        duration_ms: 4_294_967_301,
    }
}

fn step_finished_frame() -> Vec<u8> {
    let mut expected = vec![0x00, 0x00, 0x00, 0x5e, 0x01];
    expected.extend_from_slice(STEP_FINISHED_JSON);
    expected
}

/// A data frame for stream 0x0a0b0c0d with 300 payload bytes: length 305 = 0x0131.
fn data_frame() -> (Bytes, Vec<u8>) {
    let payload: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    let mut expected = vec![0x00, 0x00, 0x01, 0x31, 0x02, 0x0a, 0x0b, 0x0c, 0x0d];
    expected.extend_from_slice(&payload);
    (Bytes::from(payload), expected)
}

#[tokio::test]
async fn a_step_finished_message_has_fixed_bytes_on_the_wire() {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let mut conn = Connection::new(ours, FrameCodec::default());
    conn.send(&step_finished()).await.unwrap();
    let (payload, data_expected) = data_frame();
    conn.send_data(0x0a0b_0c0d, payload).await.unwrap();
    drop(conn);
    let mut wire = Vec::new();
    theirs.read_to_end(&mut wire).await.unwrap();
    let mut expected = step_finished_frame();
    expected.extend_from_slice(&data_expected);
    assert_eq!(wire, expected);
}

#[tokio::test]
async fn fixed_bytes_decode_to_the_same_messages() {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let (payload, data_bytes) = data_frame();
    let mut wire = step_finished_frame();
    wire.extend_from_slice(&data_bytes);
    theirs.write_all(&wire).await.unwrap();
    drop(theirs);
    let mut conn = Connection::new(ours, FrameCodec::default());
    assert_eq!(
        conn.recv().await.unwrap(),
        Some(Incoming::Message(step_finished()))
    );
    assert_eq!(
        conn.recv().await.unwrap(),
        Some(Incoming::Data {
            stream: 0x0a0b_0c0d,
            bytes: payload
        })
    );
    assert_eq!(conn.recv().await.unwrap(), None);
}

/// Every stream message with the exact JSON it must travel as. The frame around it is the
/// big-endian length (kind byte + JSON), kind 1, the JSON.
fn stream_messages() -> Vec<(Message, &'static str)> {
    vec![
        (
            Message::StepStarted {
                step: 3,
                name: "Build".into(),
                log: 0x0102_0304,
            },
            r#"{"type":"step_started","step":3,"name":"Build","log":16909060}"#,
        ),
        (
            Message::Upload {
                stream: 7,
                kind: BlobKind::Cache,
                name: "v1-deps-abc".into(),
            },
            r#"{"type":"upload","stream":7,"kind":"cache","name":"v1-deps-abc"}"#,
        ),
        (
            Message::Upload {
                stream: 8,
                kind: BlobKind::TestResults,
                name: "junit/a.xml".into(),
            },
            r#"{"type":"upload","stream":8,"kind":"test_results","name":"junit/a.xml"}"#,
        ),
        (
            Message::Download {
                stream: 9,
                kind: BlobKind::Workspace,
                keys: vec!["a".into(), "b-".into()],
            },
            r#"{"type":"download","stream":9,"kind":"workspace","keys":["a","b-"]}"#,
        ),
        (
            Message::Download {
                stream: 10,
                kind: BlobKind::Artifact,
                keys: vec![],
            },
            r#"{"type":"download","stream":10,"kind":"artifact","keys":[]}"#,
        ),
        (
            Message::End {
                stream: 4_294_967_295,
                error: None,
            },
            r#"{"type":"end","stream":4294967295}"#,
        ),
        (
            Message::End {
                stream: 7,
                error: Some("read failed: é".into()),
            },
            "{\"type\":\"end\",\"stream\":7,\"error\":\"read failed: \u{e9}\"}",
        ),
        (
            Message::Uploaded {
                stream: 7,
                outcome: UploadOutcome::Stored,
            },
            r#"{"type":"uploaded","stream":7,"outcome":{"status":"stored"}}"#,
        ),
        (
            Message::Uploaded {
                stream: 7,
                outcome: UploadOutcome::Exists,
            },
            r#"{"type":"uploaded","stream":7,"outcome":{"status":"exists"}}"#,
        ),
        (
            Message::Uploaded {
                stream: 8,
                outcome: UploadOutcome::Failed {
                    message: "too big".into(),
                },
            },
            r#"{"type":"uploaded","stream":8,"outcome":{"status":"failed","message":"too big"}}"#,
        ),
        (
            Message::Found {
                stream: 9,
                key: "v1-deps-abc".into(),
                size: Some(1 << 40),
            },
            r#"{"type":"found","stream":9,"key":"v1-deps-abc","size":1099511627776}"#,
        ),
        (
            Message::Found {
                stream: 9,
                key: "k".into(),
                size: None,
            },
            r#"{"type":"found","stream":9,"key":"k"}"#,
        ),
        (
            Message::NotFound { stream: 9 },
            r#"{"type":"not_found","stream":9}"#,
        ),
        (
            Message::Abandon {
                stream: 9,
                reason: "corrupt archive".into(),
            },
            r#"{"type":"abandon","stream":9,"reason":"corrupt archive"}"#,
        ),
    ]
}

fn control_frame(json: &str) -> Vec<u8> {
    let len = u32::try_from(json.len() + 1).unwrap();
    let mut frame = len.to_be_bytes().to_vec();
    frame.push(0x01);
    frame.extend_from_slice(json.as_bytes());
    frame
}

#[test]
fn the_frame_header_of_a_stream_message_is_big_endian() {
    // Spelled out once, so a wrong `to_be_bytes` above cannot hide a wrong encoding.
    let frame = control_frame(r#"{"type":"not_found","stream":9}"#);
    assert_eq!(&frame[..5], &[0x00, 0x00, 0x00, 0x20, 0x01]);
}

#[tokio::test]
async fn every_stream_message_has_fixed_bytes_on_the_wire() {
    for (message, json) in stream_messages() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let mut conn = Connection::new(ours, FrameCodec::default());
        conn.send(&message).await.unwrap();
        drop(conn);
        let mut wire = Vec::new();
        theirs.read_to_end(&mut wire).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&wire[5..]),
            json,
            "{}",
            message.kind()
        );
        assert_eq!(wire, control_frame(json), "{}", message.kind());
    }
}

#[tokio::test]
async fn fixed_bytes_of_every_stream_message_decode_to_it() {
    let messages = stream_messages();
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let mut wire = Vec::new();
    for (_, json) in &messages {
        wire.extend_from_slice(&control_frame(json));
    }
    theirs.write_all(&wire).await.unwrap();
    drop(theirs);
    let mut conn = Connection::new(ours, FrameCodec::default());
    for (message, _) in messages {
        assert_eq!(conn.recv().await.unwrap(), Some(Incoming::Message(message)));
    }
    assert_eq!(conn.recv().await.unwrap(), None);
}

#[tokio::test]
async fn unknown_kinds_and_bad_stream_ids_are_clear_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            control_frame(r#"{"type":"upload","stream":1,"kind":"secrets","name":"x"}"#),
            "unknown variant `secrets`, expected one of `artifact`, `cache`, `workspace`, `test_results`",
        ),
        (
            control_frame(r#"{"type":"uploaded","stream":1,"outcome":{"status":"maybe"}}"#),
            "unknown variant `maybe`, expected one of `stored`, `exists`, `failed`",
        ),
        (
            control_frame(r#"{"type":"download","stream":-1,"kind":"cache","keys":[]}"#),
            "invalid value: integer `-1`, expected u32",
        ),
        (
            control_frame(r#"{"type":"end","stream":4294967296}"#),
            "invalid value: integer `4294967296`, expected u32",
        ),
        (
            vec![0x00, 0x00, 0x00, 0x06, 0x02, 0x00, 0x00, 0x00, 0x00, b'x'],
            "stream id 0 is reserved: data streams are numbered from 1",
        ),
        (
            vec![0x00, 0x00, 0x00, 0x01, 0x03],
            "unknown frame kind 0x03",
        ),
    ];
    for (wire, expected) in cases {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        theirs.write_all(&wire).await.unwrap();
        drop(theirs);
        let mut conn = Connection::new(ours, FrameCodec::default());
        let err = conn.recv().await.unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{err:?} should contain {expected:?}"
        );
    }
}
