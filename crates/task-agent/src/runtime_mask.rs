//! `circleci-agent mask`: a value the job registers at run time, masked in every byte it writes
//! after the command returns.
//!
//! The task-agent listens on [`SOCKET_NAME`] in the task-data directory
//! (`$CIRCLE_INTERNAL_TASK_DATA`, 0700, the job user's; so only this job reaches it). One request
//! per connection: the client writes the value (at most [`MAX_RUNTIME_VALUE`] bytes) and shuts its
//! side down; the agent adds it to the task's [`Masks`] (rebuilding the automaton) and only then
//! answers one line: `ok`, `short` (not masked: under 4 characters, or a boolean) or
//! `error: <why>`. So once the command returns, every chunk the agent masks includes the value,
//! and every byte the job writes afterwards reaches the agent after that point. Connections are
//! served one at a time, each given [`REQUEST_TIMEOUT`] to send its request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;

use crate::mask::{Added, MAX_RUNTIME_VALUE, MaskError, Masks};

/// The socket's name in the task-data directory.
pub const SOCKET_NAME: &str = "mask.sock";

/// How long a client may take to send its value.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest answer line.
const MAX_ANSWER: u64 = 1024;

/// Listens on `<task_data>/mask.sock` and adds what the job sends to `masks`, until the task
/// ends (abort the handle). Errors name the socket.
pub fn listen(task_data: &Path, masks: Arc<Masks>) -> std::io::Result<JoinHandle<()>> {
    let path = task_data.join(SOCKET_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(named(&path, err)),
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(|err| named(&path, err))?;
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "cannot accept on the mask socket");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            serve(stream, &masks).await;
        }
    }))
}

fn named(path: &Path, err: std::io::Error) -> std::io::Error {
    std::io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

async fn serve(mut stream: tokio::net::UnixStream, masks: &Masks) {
    let mut value = Vec::new();
    let limit = u64::try_from(MAX_RUNTIME_VALUE).unwrap_or(u64::MAX) + 1;
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut stream).take(limit).read_to_end(&mut value),
    )
    .await;
    let answer = match read {
        Err(_) => "error: the value did not arrive in time".to_owned(),
        Ok(Err(err)) => format!("error: cannot read the value: {err}"),
        Ok(Ok(_)) if value.len() > MAX_RUNTIME_VALUE => format!("error: {}", MaskError::TooLong),
        Ok(Ok(_)) => match String::from_utf8(value) {
            Err(_) => "error: the value is not UTF-8 text".to_owned(),
            Ok(value) => match masks.add_runtime(&value) {
                Ok(Added::Masked | Added::Known) => "ok".to_owned(),
                Ok(Added::NotMaskable) => "short".to_owned(),
                Err(err) => format!("error: {err}"),
            },
        },
    };
    if answer.starts_with("error") {
        // The reason only: never the value.
        tracing::warn!(%answer, "a runtime mask was refused");
    }
    let _ = stream.write_all(format!("{answer}\n").as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// What the task-agent said about a registered value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    Masked,
    /// Too short or a boolean: not masked.
    NotMaskable,
}

/// The client side: registers `value` with the task-agent whose task-data directory is `dir`;
/// returns once the agent masks it. Errors are sentences for the user (never the value).
pub fn register(dir: &Path, value: &[u8]) -> Result<Registered, String> {
    use std::io::{Read as _, Write as _};
    let path: PathBuf = dir.join(SOCKET_NAME);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|err| {
        format!(
            "no task-agent listens at {}: {err} (does this job run under bosun's task-agent?)",
            path.display()
        )
    })?;
    let io_error =
        |err: std::io::Error| format!("talking to the task-agent at {}: {err}", path.display());
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT * 3))
        .map_err(io_error)?;
    stream.write_all(value).map_err(io_error)?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(io_error)?;
    let mut answer = String::new();
    stream
        .take(MAX_ANSWER)
        .read_to_string(&mut answer)
        .map_err(io_error)?;
    match answer.trim_end() {
        "ok" => Ok(Registered::Masked),
        "short" => Ok(Registered::NotMaskable),
        other => match other.strip_prefix("error: ") {
            Some(why) => Err(why.to_owned()),
            None => Err(format!(
                "the task-agent at {} gave no answer (it may have ended)",
                path.display()
            )),
        },
    }
}
