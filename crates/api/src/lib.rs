//! The runner API between bosun's agents, CLI and server: serde types in CircleCI's shapes where
//! CircleCI publishes them (design §3), bosun's own where CircleCI's are closed, and a small HTTP/1
//! client built on hyper, with one typed method per endpoint and streamed bodies for uploads and
//! downloads.
//!
//! The task spec the server hands out is a `protocol` type ([`TaskSpec`]): the launch-agent
//! forwards it to its task-agent without compiling anything.

mod client;
mod connect;
mod endpoints;
pub mod types;

pub use bosun_protocol::task;
pub use bosun_protocol::task::TaskSpec;
pub use client::{
    ApiError, Auth, Body, BodySender, BoxError, Client, Download, MAX_RESPONSE_BYTES, Response,
    Timeouts, UploadGone, decode_component, encode_component,
};
pub use connect::{ConnectOptions, ProxyChoice};
pub use endpoints::{CACHE_KEY_HEADER, InstanceFilter};
pub use hyper::{Method, StatusCode};
pub use types::*;
