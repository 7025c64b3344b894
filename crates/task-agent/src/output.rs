//! The pipe that carries a step's output.
//!
//! stdout and stderr of a step are the *same* pipe (two descriptors of one write end), so the log
//! keeps the order in which the step wrote to them. The agent reads the other end in chunks of up
//! to [`CHUNK`] bytes and forwards each chunk as soon as it is read: no line buffering, a prompt
//! without a newline shows up at once.

use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use nix::fcntl::OFlag;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// Largest piece of output read (and sent) at once.
pub const CHUNK: usize = 64 * 1024;

/// After a step's process exits, how long the pipe may stay silent before the agent stops waiting
/// for its end (a background grandchild can hold the write end open for ever).
pub const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// After a step's process exits, the longest the agent keeps draining a pipe that never goes quiet.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// A fresh output pipe: hand [`OutputPipe::stdout`] and [`OutputPipe::stderr`] to the child, then
/// drop them (through the `Command`) so that the child holds the only write ends.
#[derive(Debug)]
pub struct OutputPipe {
    pub reader: OutputReader,
    write: OwnedFd,
}

impl OutputPipe {
    /// Both ends are close-on-exec; the child gets its copies through `dup2`, which clears it.
    pub fn new() -> io::Result<OutputPipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        // Only the read end becomes non-blocking: the two ends are separate open file
        // descriptions, so the child keeps an ordinary blocking stdout.
        let reader = pipe::Receiver::from_owned_fd(read)?;
        Ok(OutputPipe {
            reader: OutputReader {
                pipe: reader,
                buf: vec![0; CHUNK].into_boxed_slice(),
            },
            write,
        })
    }

    /// The `Stdio` pair for the child's stdout and stderr.
    pub fn into_stdio(self) -> io::Result<(OutputReader, Stdio, Stdio)> {
        let stdout = self.write.try_clone()?;
        Ok((self.reader, Stdio::from(stdout), Stdio::from(self.write)))
    }
}

/// The agent's end of an output pipe.
#[derive(Debug)]
pub struct OutputReader {
    pipe: pipe::Receiver,
    buf: Box<[u8]>,
}

impl OutputReader {
    /// The next chunk of output, or `None` at end of file (every write end closed).
    ///
    /// Cancel-safe: if the future is dropped before it completes, no output is lost.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let n = self.pipe.read(&mut self.buf).await?;
        if n == 0 {
            Ok(None)
        } else {
            Ok(Some(Bytes::copy_from_slice(&self.buf[..n])))
        }
    }
}
