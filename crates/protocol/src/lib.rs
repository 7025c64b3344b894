//! The local protocol between bosun's `launch-agent` (root, holds the tokens) and its
//! `task-agent` (the job user, runs the steps).
//!
//! Frames travel over one Unix stream socket: a 4-byte big-endian length, a 1-byte kind and a
//! payload. Control frames carry one JSON [`Message`]; data frames carry raw bytes for a numbered
//! stream: a step's log, an upload ([`Message::Upload`] … [`Message::End`]) or a download
//! ([`Message::Download`] answered by [`Message::Found`] … [`Message::End`] or
//! [`Message::NotFound`]); see [`streams`] for the rules of stream ids. The first exchange is the handshake: the task-agent says [`Message::Hello`]
//! with its protocol version and the launch-agent answers [`Message::Welcome`] with the task, or
//! [`Message::Refused`].
//!
//! This crate knows nothing about HTTP, the server or processes.

mod connection;
mod frame;
mod message;
#[cfg(test)]
mod proptests;
pub mod streams;
pub mod task;

pub use connection::{Connection, ConnectionReader, ConnectionWriter, Incoming};
pub use frame::{DEFAULT_MAX_FRAME, Frame, FrameCodec, FrameKind};
pub use message::{BlobKind, Message, StepStatus, TaskStatus, UploadOutcome};
pub use streams::{DEFAULT_MAX_OPEN_STREAMS, StreamTable};

/// Version of the wire protocol; both sides must speak the same one. 2: data streams have ids of
/// their own (`StepStarted` names its log's), uploads and downloads. 3: cache and workspace steps
/// in the task spec, workspace manifests. 4: secrets, checkout credentials, SSH keys and
/// `add_ssh_keys` in the task spec.
pub const PROTOCOL_VERSION: u32 = 4;

/// Everything that can go wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("i/o error on the agent socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("frame has length 0: every frame carries at least its kind byte")]
    EmptyFrame,
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("data frame of {0} bytes is too short to hold its 4-byte stream id")]
    ShortDataFrame(usize),
    #[error("connection closed in the middle of a frame ({0} bytes of it received)")]
    Truncated(usize),
    #[error("malformed control message: {0}")]
    BadMessage(#[from] serde_json::Error),
    #[error("peer speaks protocol version {peer}, this agent speaks {ours}")]
    WrongVersion { peer: u32, ours: u32 },
    #[error("unexpected message: expected {expected}, received {received}")]
    UnexpectedMessage {
        expected: &'static str,
        received: String,
    },
    #[error("the launch-agent refused this task-agent: {0}")]
    Refused(String),
    #[error("connection closed by the peer while waiting for {0}")]
    Closed(&'static str),
    #[error("stream id 0 is reserved: data streams are numbered from 1")]
    StreamZero,
    #[error(
        "stream {stream} opened after stream {highest}: stream ids increase and are never reused"
    )]
    StreamOutOfOrder { stream: u32, highest: u32 },
    #[error("{what} for stream {stream}, which is not open")]
    UnknownStream { stream: u32, what: &'static str },
    #[error("more than {max} data streams open at once")]
    TooManyStreams { max: usize },
}
