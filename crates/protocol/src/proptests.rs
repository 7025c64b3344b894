//! Property tests: every message and data frame survives encoding and decoding, whatever the
//! values and however the bytes are split on the way.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use crate::{BlobKind, Frame, FrameCodec, Message, StepStatus, UploadOutcome};

fn kind() -> impl Strategy<Value = BlobKind> {
    prop_oneof![
        Just(BlobKind::Artifact),
        Just(BlobKind::Cache),
        Just(BlobKind::Workspace),
        Just(BlobKind::TestResults),
    ]
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, control characters and quotes included: JSON must escape them.
    proptest::collection::vec(any::<char>(), 0..40).prop_map(|chars| chars.into_iter().collect())
}

fn stream() -> impl Strategy<Value = u32> {
    1..=u32::MAX
}

fn outcome() -> impl Strategy<Value = UploadOutcome> {
    prop_oneof![
        Just(UploadOutcome::Stored),
        Just(UploadOutcome::Exists),
        text().prop_map(|message| UploadOutcome::Failed { message }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u32>(), text(), stream()).prop_map(|(step, name, log)| Message::StepStarted {
            step,
            name,
            log
        }),
        (
            any::<u32>(),
            prop_oneof![
                Just(StepStatus::Success),
                Just(StepStatus::Failed),
                Just(StepStatus::Canceled),
                Just(StepStatus::Skipped)
            ],
            any::<Option<i32>>(),
            any::<u64>()
        )
            .prop_map(
                |(step, status, exit_code, duration_ms)| Message::StepFinished {
                    step,
                    status,
                    exit_code,
                    duration_ms
                }
            ),
        (stream(), kind(), text()).prop_map(|(stream, kind, name)| Message::Upload {
            stream,
            kind,
            name
        }),
        (stream(), kind(), proptest::collection::vec(text(), 0..5))
            .prop_map(|(stream, kind, keys)| Message::Download { stream, kind, keys }),
        (stream(), proptest::option::of(text()))
            .prop_map(|(stream, error)| Message::End { stream, error }),
        (stream(), outcome()).prop_map(|(stream, outcome)| Message::Uploaded { stream, outcome }),
        (stream(), text(), any::<Option<u64>>()).prop_map(|(stream, key, size)| Message::Found {
            stream,
            key,
            size
        }),
        stream().prop_map(|stream| Message::NotFound { stream }),
        (stream(), text()).prop_map(|(stream, reason)| Message::Abandon { stream, reason }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        message().prop_map(|message| {
            Frame::Control(Bytes::from(serde_json::to_vec(&message).unwrap()))
        }),
        (stream(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(stream, bytes)| {
            Frame::Data {
                stream,
                bytes: Bytes::from(bytes),
            }
        }),
    ]
}

proptest! {
    #[test]
    fn messages_round_trip_through_json(message in message()) {
        let json = serde_json::to_vec(&message).unwrap();
        let back: Message = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(back, message);
    }

    #[test]
    fn frames_round_trip_however_the_bytes_are_split(
        frames in proptest::collection::vec(frame(), 1..8),
        cuts in proptest::collection::vec(1usize..64, 1..16),
    ) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            FrameCodec::default().encode(frame.clone(), &mut wire).unwrap();
        }
        // Feed the bytes in pieces of the sizes drawn, cycling through them.
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut at = 0;
        for cut in cuts.iter().cycle() {
            if at >= wire.len() {
                break;
            }
            let end = (at + cut).min(wire.len());
            buf.put_slice(&wire[at..end]);
            at = end;
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut codec = FrameCodec::new(128);
        let mut buf = BytesMut::from(&bytes[..]);
        // Errors are fine; a panic or an endless loop is not.
        for _ in 0..bytes.len() + 1 {
            match codec.decode(&mut buf) {
                Ok(Some(Frame::Control(json))) => {
                    let _ = serde_json::from_slice::<Message>(&json);
                }
                Ok(Some(Frame::Data { .. })) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}
