//! Times the secret masker over text-like log data in 64 KiB chunks, as a step's output reaches
//! it: `cargo run --release -p bosun-task-agent --example mask_bench -- [GIB] [SECRETS...]`
//! (1 GiB, and 0 then 100 secrets of 32 characters by default).
//!
//! The data is 16 MiB of generated log lines (timestamps, words, paths, hex ids), cycled; with
//! secrets, one line in 10,000 carries one of them, so matches are rare, as in real logs. Each
//! run goes through the same calls `Outbox::data` makes: `Masks::current`, then
//! `Patterns::mask_chunk` on the stream's held tail, and `finish` at the end.

use std::time::Instant;

use bosun_protocol::task::TaskSpec;
use bosun_task_agent::mask::{Held, Masks};
use bytes::Bytes;

const CHUNK: usize = 64 << 10;

/// A small xorshift generator: the same data on every run, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[(self.next() % list.len() as u64) as usize]
    }
}

fn secret(rng: &mut Rng) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=:@";
    (0..32)
        .map(|_| char::from(CHARS[(rng.next() % CHARS.len() as u64) as usize]))
        .collect()
}

fn text(rng: &mut Rng, secrets: &[String], size: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "Compiling",
        "Downloaded",
        "warning:",
        "error:",
        "test",
        "ok",
        "passed",
        "FAILED",
        "running",
        "crate",
        "serde",
        "tokio",
        "the",
        "of",
        "request",
        "GET",
        "POST",
        "200",
        "404",
        "/usr/lib/x86_64-linux-gnu",
        "src/main.rs:42:7",
        "npm",
        "install",
        "added",
        "packages",
    ];
    let mut out = Vec::with_capacity(size + 256);
    let mut line = 0u64;
    while out.len() < size {
        line += 1;
        let id = rng.next();
        out.extend_from_slice(
            format!(
                "2026-12-02T01:{:02}:{:02}.{:03}Z INFO [{id:016x}] ",
                line % 60,
                (line / 60) % 60,
                line % 1000
            )
            .as_bytes(),
        );
        for _ in 0..(4 + rng.next() % 10) {
            out.extend_from_slice(rng.pick(WORDS).as_bytes());
            out.push(b' ');
        }
        if !secrets.is_empty() && line % 10_000 == 0 {
            let secret = &secrets[(rng.next() % secrets.len() as u64) as usize];
            out.extend_from_slice(secret.as_bytes());
        }
        out.push(b'\n');
    }
    out.truncate(size);
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let gib: u64 = args
        .next()
        .map(|arg| arg.parse().expect("GIB is a number"))
        .unwrap_or(1);
    let counts: Vec<usize> = args
        .map(|arg| arg.parse().expect("SECRETS is a number"))
        .collect();
    let counts = if counts.is_empty() {
        vec![0, 100]
    } else {
        counts
    };
    let total = gib << 30;
    for count in counts {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let secrets: Vec<String> = (0..count).map(|_| secret(&mut rng)).collect();
        let data = Bytes::from(text(&mut rng, &secrets, 16 << 20));
        let masks = Masks::new();
        let mut task: TaskSpec = serde_json::from_value(serde_json::json!({
            "task_id": "t", "job_id": "j", "job_name": "bench", "build_num": 1,
            "pipeline_id": "p", "pipeline_number": 1, "workflow_id": "w",
            "project_slug": "gh/a/b", "repository_url": "/r", "revision": "0",
            "parallel_index": 0, "parallel_total": 1, "environment": {}, "steps": []
        }))
        .expect("a task spec");
        for (i, value) in secrets.iter().enumerate() {
            task.secrets.0.insert(format!("S{i}"), value.clone());
        }
        let built = Instant::now();
        masks.add_task_secrets(&task).expect("masks");
        let build_time = built.elapsed();
        let memory = masks.current().map_or(0, |p| p.memory_usage());

        let started = Instant::now();
        let mut held = Held::new();
        let mut sent = 0u64;
        let mut masked_bytes = 0u64;
        let mut offset = 0usize;
        while sent < total {
            if offset + CHUNK > data.len() {
                offset = 0;
            }
            let chunk = data.slice(offset..offset + CHUNK);
            offset += CHUNK;
            sent += CHUNK as u64;
            // What `Outbox::data` does.
            let out = match masks.current() {
                None => chunk,
                Some(patterns) => patterns.mask_chunk(&mut held, chunk),
            };
            masked_bytes += out.len() as u64;
        }
        if let Some(patterns) = masks.current() {
            masked_bytes += patterns.finish(&mut held).len() as u64;
        }
        let elapsed = started.elapsed();
        let mib = sent as f64 / f64::from(1 << 20);
        println!(
            "{count:>4} secrets: built in {build_time:.2?} ({} KiB); {mib:.0} MiB in \
             {elapsed:.2?} = {:.0} MiB/s ({masked_bytes} bytes out)",
            memory >> 10,
            mib / elapsed.as_secs_f64(),
        );
    }
}
