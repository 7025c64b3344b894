//! Times the task-agent's archive code outside a task, for comparisons with `tar`:
//!
//! ```text
//! cargo run --release -p bosun-task-agent --example archive_bench -- create DIR OUT.tar.zst
//! cargo run --release -p bosun-task-agent --example archive_bench -- extract IN.tar.zst DIR
//! ```
//!
//! `create` archives DIR's contents (names relative to it), as `persist_to_workspace` with
//! `root: DIR` and `paths: [.]` does; `extract` unpacks into DIR, as `attach_workspace` does.
//! Each prints its wall time, the bytes it moved and the process's peak RSS (`VmHWM`).
//! `node_modules_tree.py DIR` beside this file generates the tree the figures in the round-9
//! report were taken on (about 30,000 files, 200 MB).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use bosun_task_agent::steps::archive::{
    self, ChannelReader, ChannelWriter, Layout, PIPE_CHUNKS, Piece, Source, Unpacker,
};
use bytes::Bytes;
use tokio::sync::mpsc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    match args.as_slice() {
        [command, dir, out] if command == "create" => {
            let (tx, mut rx) = mpsc::channel::<Bytes>(PIPE_CHUNKS);
            let mut file = std::fs::File::create(out)?;
            let writer = std::thread::spawn(move || -> std::io::Result<u64> {
                let mut total = 0;
                while let Some(chunk) = rx.blocking_recv() {
                    total += chunk.len() as u64;
                    file.write_all(&chunk)?;
                }
                Ok(total)
            });
            let sources = [Source {
                path: PathBuf::from(dir),
                name: PathBuf::new(),
            }];
            let created = archive::create(&sources, ChannelWriter::new(tx))?;
            let compressed = writer.join().expect("the writer panicked")?;
            println!(
                "created: {} entries, {} files, {} bytes -> {compressed} bytes in {:.2}s, zstd workers {}, VmHWM {}",
                created.entries,
                created.files,
                created.bytes,
                started.elapsed().as_secs_f64(),
                archive::threads(),
                peak_rss()
            );
        }
        [command, input, dir] if command == "extract" => {
            let (tx, rx) = mpsc::channel::<Piece>(PIPE_CHUNKS);
            let mut file = std::fs::File::open(input)?;
            let reader = std::thread::spawn(move || -> std::io::Result<()> {
                loop {
                    let mut buf = vec![0u8; archive::CHUNK];
                    let read = file.read(&mut buf)?;
                    if read == 0 {
                        let _ = tx.blocking_send(Piece::End);
                        return Ok(());
                    }
                    buf.truncate(read);
                    if tx.blocking_send(Piece::Data(Bytes::from(buf))).is_err() {
                        return Ok(());
                    }
                }
            });
            std::fs::create_dir_all(dir)?;
            let mut unpacker = Unpacker::new(Layout::Workspace {
                at: PathBuf::from(dir),
            });
            let unpacked = unpacker.unpack(ChannelReader::new(rx), None)?;
            reader.join().expect("the reader panicked")?;
            println!(
                "extracted: {} entries, {} files, {} bytes in {:.2}s, VmHWM {}",
                unpacked.entries,
                unpacked.files,
                unpacked.bytes,
                started.elapsed().as_secs_f64(),
                peak_rss()
            );
        }
        _ => anyhow::bail!("usage: archive_bench create DIR OUT | extract IN DIR"),
    }
    Ok(())
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .map(|line| line["VmHWM:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
