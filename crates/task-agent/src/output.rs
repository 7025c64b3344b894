//! The pipe that carries a step's output.
//!
//! stdout and stderr of a step are the *same* pipe (two descriptors of one write end), so the log
//! keeps the order in which the step wrote to them. The agent reads the other end in chunks of up
//! to [`CHUNK`] bytes and forwards output as soon as it is read: no line buffering, a prompt
//! without a newline shows up at once.
//!
//! Except while a step streams: output arriving within [`STREAMING_GAP`] of the previous chunk
//! is gathered for up to [`GATHER`] (or until [`CHUNK`] bytes) before it goes, so a step
//! printing hundreds of MB/s in small writes costs a few hundred chunks a second instead of
//! a hundred thousand (each a frame, a wake-up and a compression call in the launch-agent).
//! The first bytes after a pause are never held.

use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use nix::fcntl::OFlag;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// Largest piece of output read (and sent) at once.
pub const CHUNK: usize = 256 * 1024;

/// Output read within this long of the previous chunk counts as streaming.
pub const STREAMING_GAP: Duration = Duration::from_millis(1);

/// The longest streaming output is held to gather a bigger chunk: far below what anyone
/// watching a log notices, and the launch-agent batches uploads for longer anyway.
pub const GATHER: Duration = Duration::from_millis(2);

/// The pipe's capacity asked for (Linux's default is 64 KiB; 1 MiB is the default most an
/// unprivileged process may ask, `/proc/sys/fs/pipe-max-size`): a step writing fast keeps
/// writing while the agent forwards what it read.
const PIPE_CAPACITY: i32 = 1 << 20;

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
        // Best effort: a smaller pipe (the limit lowered, or a user's pipe quota spent) only
        // means the step waits for the agent sooner.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let _ = nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY));
        // Only the read end becomes non-blocking: the two ends are separate open file
        // descriptions, so the child keeps an ordinary blocking stdout.
        let reader = pipe::Receiver::from_owned_fd(read)?;
        Ok(OutputPipe {
            reader: OutputReader {
                pipe: reader,
                buf: vec![0; CHUNK].into_boxed_slice(),
                filled: 0,
                gather_until: None,
                last_chunk: None,
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
    /// Bytes of `buf` read and not yet returned (kept here, so a dropped call loses nothing).
    filled: usize,
    /// While gathering streaming output: when what is gathered goes out.
    gather_until: Option<Instant>,
    /// When the last chunk was returned.
    last_chunk: Option<Instant>,
}

impl OutputReader {
    /// The next chunk of output, or `None` at end of file (every write end closed).
    ///
    /// Cancel-safe: if the future is dropped before it completes, no output is lost (what was
    /// read stays in the reader for the next call).
    pub async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.filled == 0 {
                let n = self.pipe.read(&mut self.buf).await?;
                if n == 0 {
                    return Ok(None);
                }
                self.filled = n;
                let now = Instant::now();
                let streaming = self
                    .last_chunk
                    .is_some_and(|last| now.duration_since(last) < STREAMING_GAP);
                if !streaming {
                    return Ok(Some(self.take()));
                }
                self.gather_until = Some(now + GATHER);
            }
            let Some(until) = self.gather_until.filter(|_| self.filled < self.buf.len()) else {
                return Ok(Some(self.take()));
            };
            tokio::select! {
                read = self.pipe.read(&mut self.buf[self.filled..]) => match read {
                    // The end of the output: what was gathered goes now, `None` next time.
                    Ok(0) => return Ok(Some(self.take())),
                    Ok(n) => self.filled += n,
                    // What was gathered goes now; the next call's read meets the error again.
                    Err(_) => return Ok(Some(self.take())),
                },
                () = tokio::time::sleep_until(until) => return Ok(Some(self.take())),
            }
        }
    }

    /// What was read, as a chunk.
    fn take(&mut self) -> Bytes {
        let chunk = Bytes::copy_from_slice(&self.buf[..self.filled]);
        self.filled = 0;
        self.gather_until = None;
        self.last_chunk = Some(Instant::now());
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `script` with both outputs on a fresh output pipe; the chunks read.
    async fn chunks_of(script: &str) -> Vec<Bytes> {
        let (mut reader, stdout, stderr) = OutputPipe::new().unwrap().into_stdio().unwrap();
        let mut child = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut chunks = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.unwrap() {
            chunks.push(chunk);
        }
        assert!(child.wait().await.unwrap().success());
        chunks
    }

    #[tokio::test]
    async fn streaming_output_is_gathered_into_few_chunks() {
        // 2,000 one-byte writes, a fifth of a millisecond apart: each would be a chunk of its
        // own without gathering (the reader is faster than that).
        let chunks = chunks_of(
            "python3 -c 'import os, time\nfor i in range(2000): os.write(1, b\"x\"); time.sleep(0.0002)'",
        )
        .await;
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(all, vec![b'x'; 2000]);
        assert!(
            chunks.len() < 1000,
            "{} chunks for 2,000 writes in a row",
            chunks.len()
        );
    }

    #[tokio::test]
    async fn output_after_a_pause_is_not_held() {
        let chunks = chunks_of("printf 'prompt> '; sleep 0.3; printf answer").await;
        assert_eq!(chunks, [&b"prompt> "[..], &b"answer"[..]]);
    }
}
