//! The exact bytes a connection puts on the wire, compared against fixed vectors, so every target
//! (s390x and ppc64le under qemu in CI, big- and little-endian) is held to the same encoding.

use bosun_protocol::{Connection, FrameCodec, Incoming, Message, StepStatus};
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
