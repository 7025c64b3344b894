//! The async side of archive transfers: an archive created in a blocking thread sent through an
//! [`Upload`], a [`Download`] fed to an [`Unpacker`] in a blocking thread; a cancel is noticed
//! between chunks, and a progress line goes to the step's log at most every
//! [`PROGRESS_EVERY`].

use std::time::{Duration, Instant};

use bosun_protocol::{BlobKind, UploadOutcome};
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::archive::{
    self, ArchiveError, ChannelReader, ChannelWriter, Created, LayerOwner, PIPE_CHUNKS, Piece,
    Source, Unpacked, Unpacker,
};
use crate::link::{Control, Download, DownloadError, Fetched, Lost, Outbox, Upload, UploadStop};

/// How often a long transfer logs how far it got.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Bytes as CircleCI's logs show sizes: `512 B`, `1.2 KiB`, `12 MiB`, `1.5 GiB`.
/// `1 file`, `2 files`.
pub fn files(count: u64) -> String {
    if count == 1 {
        "1 file".to_owned()
    } else {
        format!("{count} files")
    }
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Logs `verb` and the bytes moved so far, at most every [`PROGRESS_EVERY`].
struct Progress<'a> {
    out: &'a Outbox,
    log: u32,
    verb: &'static str,
    bytes: u64,
    last: Instant,
}

impl Progress<'_> {
    async fn add(&mut self, bytes: usize) -> Result<(), Lost> {
        self.bytes += bytes as u64;
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            self.out
                .text(
                    self.log,
                    format!("  {} {} so far\n", self.verb, human(self.bytes)),
                )
                .await?;
        }
        Ok(())
    }
}

fn running(control: &watch::Receiver<Control>) -> bool {
    matches!(*control.borrow(), Control::Run)
}

/// Asks for a download, giving up (`None`) when the step is stopped while it waits.
pub async fn ask(
    out: &Outbox,
    kind: BlobKind,
    keys: Vec<String>,
    control: &mut watch::Receiver<Control>,
) -> Result<Option<Fetched>, Lost> {
    let asked = out.download(kind, keys);
    tokio::pin!(asked);
    loop {
        if !running(control) {
            return Ok(None);
        }
        tokio::select! {
            biased;
            changed = control.changed() => if changed.is_err() {
                return Ok(None);
            },
            fetched = &mut asked => return fetched.map(Some),
        }
    }
}

/// How sending an archive ended.
#[derive(Debug)]
pub enum Sent {
    /// The archive was complete; `outcome` is the launch-agent's answer. `compressed` bytes
    /// went over the socket.
    Done {
        created: Created,
        compressed: u64,
        outcome: UploadOutcome,
    },
    /// The launch-agent answered before the end (the key exists, a limit).
    Answered(UploadOutcome),
    /// The step was stopped; the upload was aborted.
    Canceled,
    /// The archive could not be made; the upload was aborted.
    Failed(ArchiveError),
}

/// Archives `sources` into `upload`.
pub async fn send(
    out: &Outbox,
    log: u32,
    mut upload: Upload,
    sources: Vec<Source>,
    control: &mut watch::Receiver<Control>,
) -> Result<Sent, Lost> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(PIPE_CHUNKS);
    let archiver =
        tokio::task::spawn_blocking(move || archive::create(&sources, ChannelWriter::new(tx)));
    let mut progress = Progress {
        out,
        log,
        verb: "Uploaded",
        bytes: 0,
        last: Instant::now(),
    };
    enum Stop {
        Produced,
        Answered,
        Canceled,
    }
    let stop = loop {
        if !running(control) {
            break Stop::Canceled;
        }
        tokio::select! {
            biased;
            changed = control.changed() => if changed.is_err() {
                break Stop::Canceled;
            },
            chunk = rx.recv() => match chunk {
                Some(bytes) => {
                    let len = bytes.len();
                    match upload.write(bytes).await {
                        Ok(()) => {}
                        Err(UploadStop::Answered) => break Stop::Answered,
                        Err(UploadStop::Lost) => return Err(Lost),
                    }
                    progress.add(len).await?;
                }
                None => break Stop::Produced,
            },
        }
    };
    // The archiver stops at its next write once nobody receives.
    drop(rx);
    let created = match archiver.await {
        Ok(created) => created,
        Err(err) => Err(ArchiveError::Corrupt(format!(
            "the archiver stopped unexpectedly: {err}"
        ))),
    };
    Ok(match stop {
        Stop::Produced => match created {
            Ok(created) => Sent::Done {
                created,
                compressed: progress.bytes,
                outcome: upload.finish().await?,
            },
            Err(err) => {
                upload.abort(err.to_string()).await?;
                Sent::Failed(err)
            }
        },
        Stop::Answered => Sent::Answered(upload.finish().await?),
        Stop::Canceled => {
            upload.abort("the step was canceled".to_owned()).await?;
            Sent::Canceled
        }
    })
}

/// How receiving an archive ended. In every case but `Done`, the unpacker removed what it wrote.
#[derive(Debug)]
pub enum Received {
    Done(Unpacked),
    Canceled,
    Failed(ArchiveError),
}

/// Feeds `download` to `unpacker` (in a blocking thread) until its end; returns the unpacker
/// for the next layer. A download that is not read to its end is abandoned.
pub async fn receive(
    out: &Outbox,
    log: u32,
    mut download: Download,
    mut unpacker: Unpacker,
    owner: Option<LayerOwner>,
    control: &mut watch::Receiver<Control>,
) -> Result<(Unpacker, Received), Lost> {
    let (tx, rx) = mpsc::channel::<Piece>(PIPE_CHUNKS);
    let worker = tokio::task::spawn_blocking(move || {
        let result = unpacker.unpack(ChannelReader::new(rx), owner);
        (unpacker, result)
    });
    let mut progress = Progress {
        out,
        log,
        verb: "Downloaded",
        bytes: 0,
        last: Instant::now(),
    };
    let mut canceled = false;
    let mut lost = false;
    loop {
        if !running(control) {
            canceled = true;
            break;
        }
        tokio::select! {
            biased;
            changed = control.changed() => if changed.is_err() {
                canceled = true;
                break;
            },
            chunk = download.next_chunk() => match chunk {
                Ok(Some(bytes)) => {
                    let len = bytes.len();
                    // The unpacker gone (it failed) ends the download early.
                    if tx.send(Piece::Data(bytes)).await.is_err() {
                        break;
                    }
                    progress.add(len).await?;
                }
                Ok(None) => {
                    let _ = tx.send(Piece::End).await;
                    break;
                }
                Err(DownloadError::Aborted { message, .. }) => {
                    let _ = tx.send(Piece::Failed(message)).await;
                    break;
                }
                Err(DownloadError::Lost) => {
                    lost = true;
                    break;
                }
            },
        }
    }
    // Without `End`, the unpacker reads an interruption and removes what it wrote.
    drop(tx);
    // Not read to its end: the link tells the launch-agent to stop sending.
    drop(download);
    let (unpacker, result) = match worker.await {
        Ok(done) => done,
        // The unpacker panicked: a bug, reported as such rather than hidden.
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    };
    if lost {
        return Err(Lost);
    }
    Ok((
        unpacker,
        match result {
            Ok(unpacked) => Received::Done(unpacked),
            Err(ArchiveError::Interrupted) if canceled => Received::Canceled,
            Err(err) => Received::Failed(err),
        },
    ))
}

/// Reads all of a small download (a manifest), refusing more than `limit` bytes.
pub async fn read_small(
    mut download: Download,
    limit: usize,
) -> Result<Result<Vec<u8>, String>, Lost> {
    let mut bytes = Vec::new();
    loop {
        match download.next_chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > limit {
                    return Ok(Err(format!("it is larger than {} bytes", limit)));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Ok(bytes)),
            Err(DownloadError::Lost) => return Err(Lost),
            Err(err) => return Ok(Err(err.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_circleci() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(12 << 20), "12.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
