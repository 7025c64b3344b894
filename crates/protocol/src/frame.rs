//! Framing: `u32 length (big-endian) | u8 kind | payload`, where `length` counts the kind byte and
//! the payload. Data payloads start with a big-endian `u32` stream id, never 0.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::ProtocolError;

/// Default upper bound on `length` (kind byte + payload): 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

const LENGTH_BYTES: usize = 4;
const STREAM_ID_BYTES: usize = 4;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// One JSON-encoded [`crate::Message`].
    Control = 1,
    /// Raw bytes for a numbered stream.
    Data = 2,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Result<FrameKind, ProtocolError> {
        match byte {
            1 => Ok(FrameKind::Control),
            2 => Ok(FrameKind::Data),
            other => Err(ProtocolError::UnknownKind(other)),
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// JSON bytes of a control message.
    Control(Bytes),
    /// Raw bytes belonging to `stream` (never 0; see [`crate::streams`]).
    Data { stream: u32, bytes: Bytes },
}

/// tokio-util codec for [`Frame`]s with an explicit maximum frame size.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    /// A codec refusing frames whose kind byte plus payload exceed `max_frame` bytes.
    pub fn new(max_frame: usize) -> FrameCodec {
        FrameCodec { max_frame }
    }

    /// The largest data chunk that fits in one frame.
    pub fn max_data_chunk(&self) -> usize {
        self.max_frame - 1 - STREAM_ID_BYTES
    }
}

impl Default for FrameCodec {
    fn default() -> FrameCodec {
        FrameCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if src.len() < LENGTH_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        // Check the bound before waiting for (or reserving room for) the body, so a hostile
        // length never makes us allocate.
        if len > self.max_frame {
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        if len == 0 {
            return Err(ProtocolError::EmptyFrame);
        }
        if src.len() < LENGTH_BYTES + len {
            src.reserve(LENGTH_BYTES + len - src.len());
            return Ok(None);
        }
        let kind = FrameKind::from_byte(src[LENGTH_BYTES])?;
        src.advance(LENGTH_BYTES + 1);
        let mut payload = src.split_to(len - 1).freeze();
        match kind {
            FrameKind::Control => Ok(Some(Frame::Control(payload))),
            FrameKind::Data => {
                if payload.len() < STREAM_ID_BYTES {
                    return Err(ProtocolError::ShortDataFrame(payload.len()));
                }
                let stream = payload.get_u32();
                if stream == 0 {
                    return Err(ProtocolError::StreamZero);
                }
                Ok(Some(Frame::Data {
                    stream,
                    bytes: payload,
                }))
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtocolError::Truncated(src.len())),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let (kind, prefix, body) = match &frame {
            Frame::Control(json) => (FrameKind::Control, None, json),
            Frame::Data { stream: 0, .. } => return Err(ProtocolError::StreamZero),
            Frame::Data { stream, bytes } => (FrameKind::Data, Some(*stream), bytes),
        };
        let len = 1 + prefix.map_or(0, |_| STREAM_ID_BYTES) + body.len();
        if len > self.max_frame {
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        dst.reserve(LENGTH_BYTES + len);
        dst.put_u32(len as u32);
        dst.put_u8(kind as u8);
        if let Some(stream) = prefix {
            dst.put_u32(stream);
        }
        dst.put_slice(body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frame: Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(frame, &mut buf).unwrap();
        buf
    }

    #[test]
    fn control_frame_has_fixed_big_endian_bytes() {
        let buf = encode(Frame::Control(Bytes::from_static(b"{}")));
        assert_eq!(&buf[..], &[0, 0, 0, 3, 1, b'{', b'}']);
    }

    #[test]
    fn data_frame_has_fixed_big_endian_bytes() {
        let buf = encode(Frame::Data {
            stream: 0x0102_0304,
            bytes: Bytes::from_static(b"hi"),
        });
        assert_eq!(&buf[..], &[0, 0, 0, 7, 2, 1, 2, 3, 4, b'h', b'i']);
    }

    #[test]
    fn round_trips_several_frames_split_at_every_byte() {
        let frames = vec![
            Frame::Control(Bytes::from_static(b"{\"type\":\"x\"}")),
            Frame::Data {
                stream: 7,
                bytes: Bytes::from(vec![0u8, 255, 10, 13]),
            },
            Frame::Data {
                stream: u32::MAX,
                bytes: Bytes::new(),
            },
        ];
        let mut wire = BytesMut::new();
        for frame in &frames {
            FrameCodec::default()
                .encode(frame.clone(), &mut wire)
                .unwrap();
        }
        // Feed the bytes one at a time: a partial frame must never decode.
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversize_frame_is_refused_before_its_body_arrives() {
        let mut codec = FrameCodec::new(16);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 17][..]);
        match codec.decode(&mut buf) {
            Err(ProtocolError::FrameTooLarge { len: 17, max: 16 }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        let mut out = BytesMut::new();
        assert!(matches!(
            codec.encode(Frame::Control(Bytes::from(vec![b'x'; 16])), &mut out),
            Err(ProtocolError::FrameTooLarge { len: 17, max: 16 })
        ));
    }

    #[test]
    fn truncated_frame_at_eof_is_an_error() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0u8, 0, 0, 5, 1, b'{'][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(ProtocolError::Truncated(6))
        ));
        // A clean EOF between frames is not an error.
        let mut empty = BytesMut::new();
        assert!(codec.decode_eof(&mut empty).unwrap().is_none());
    }

    #[test]
    fn unknown_kind_empty_frame_and_short_data_are_errors() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 9][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(ProtocolError::UnknownKind(9))
        ));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(ProtocolError::EmptyFrame)
        ));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 2, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(ProtocolError::ShortDataFrame(2))
        ));
    }

    #[test]
    fn stream_zero_is_refused_both_ways() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0u8, 0, 0, 6, 2, 0, 0, 0, 0, b'x'][..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtocolError::StreamZero));
        assert_eq!(
            err.to_string(),
            "stream id 0 is reserved: data streams are numbered from 1"
        );
        let mut out = BytesMut::new();
        assert!(matches!(
            codec.encode(
                Frame::Data {
                    stream: 0,
                    bytes: Bytes::from_static(b"x")
                },
                &mut out
            ),
            Err(ProtocolError::StreamZero)
        ));
    }
}
