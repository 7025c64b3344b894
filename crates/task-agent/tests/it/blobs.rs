//! Caches and workspaces through the real task-agent binary and a real socketpair, with the test
//! playing a launch-agent that keeps blobs in memory: save then restore, an existing key, a
//! miss, a corrupt cache, persist then attach, a conflict between unrelated jobs' layers.

use std::collections::HashMap;
use std::path::Path;

use bosun_protocol::task::{
    AttachWorkspaceStep, PersistToWorkspaceStep, RestoreCacheStep, SaveCacheStep, Step, When,
    WorkspaceLayer, WorkspaceManifest,
};
use bosun_protocol::{BlobKind, Incoming, Message, StepStatus, UploadOutcome};
use bytes::Bytes;

use crate::harness::{Agent, Report, run, step, task};

/// The blobs a fake launch-agent keeps, and what it answers.
#[derive(Default)]
struct Peer {
    /// Stored blobs in the order they were saved: kind, name, bytes.
    blobs: Vec<(BlobKind, String, Vec<u8>)>,
    /// What a workspace download without keys answers.
    manifest: Option<WorkspaceManifest>,
    /// Downloads the agent abandoned.
    abandoned: Vec<u32>,
    /// Send half of each download, then cancel the task (and send the rest, as a launch-agent
    /// still streaming would).
    cancel_midway: bool,
}

struct Open {
    kind: BlobKind,
    name: String,
    bytes: Vec<u8>,
    /// Answered `exists` already.
    refused: bool,
}

impl Peer {
    fn find(&self, kind: BlobKind, keys: &[String]) -> Option<(String, Vec<u8>)> {
        if kind == BlobKind::Workspace {
            return match keys {
                [] => self
                    .manifest
                    .as_ref()
                    .map(|manifest| (String::new(), serde_json::to_vec(manifest).unwrap())),
                [id] => self
                    .blobs
                    .iter()
                    .find(|(k, name, _)| *k == kind && name == id)
                    .map(|(_, name, bytes)| (name.clone(), bytes.clone())),
                _ => None,
            };
        }
        // The first key that matches any wins; among its matches, the newest.
        keys.iter().find_map(|key| {
            self.blobs
                .iter()
                .rev()
                .find(|(k, name, _)| *k == kind && name.starts_with(key.as_str()))
                .map(|(_, name, bytes)| (name.clone(), bytes.clone()))
        })
    }

    fn has(&self, kind: BlobKind, name: &str) -> bool {
        self.blobs.iter().any(|(k, n, _)| *k == kind && n == name)
    }

    /// Plays the launch-agent until `TaskFinished`.
    async fn serve(&mut self, mut agent: Agent) -> Report {
        let mut report = Report::default();
        let mut open: HashMap<u32, Open> = HashMap::new();
        loop {
            let incoming = agent
                .next()
                .await
                .expect("task-agent closed the socket early");
            match incoming {
                Incoming::Message(Message::Upload { stream, kind, name }) => {
                    let refused = kind == BlobKind::Cache && self.has(kind, &name);
                    if refused {
                        agent
                            .send(Message::Uploaded {
                                stream,
                                outcome: UploadOutcome::Exists,
                            })
                            .await;
                    }
                    open.insert(
                        stream,
                        Open {
                            kind,
                            name,
                            bytes: Vec::new(),
                            refused,
                        },
                    );
                }
                Incoming::Data { stream, bytes } if open.contains_key(&stream) => {
                    let upload = open.get_mut(&stream).unwrap();
                    if !upload.refused {
                        upload.bytes.extend_from_slice(&bytes);
                    }
                }
                Incoming::Message(Message::End { stream, error }) if open.contains_key(&stream) => {
                    let upload = open.remove(&stream).unwrap();
                    if upload.refused {
                        continue;
                    }
                    let outcome = match error {
                        None => {
                            let name = match upload.kind {
                                BlobKind::Workspace => format!("layer-{}", self.blobs.len() + 1),
                                _ => upload.name,
                            };
                            self.blobs.push((upload.kind, name, upload.bytes));
                            UploadOutcome::Stored
                        }
                        Some(message) => UploadOutcome::Failed { message },
                    };
                    agent.send(Message::Uploaded { stream, outcome }).await;
                }
                Incoming::Message(Message::Download { stream, kind, keys }) => {
                    match self.find(kind, &keys) {
                        None => agent.send(Message::NotFound { stream }).await,
                        Some((key, bytes)) => {
                            agent
                                .send(Message::Found {
                                    stream,
                                    key,
                                    size: Some(bytes.len() as u64),
                                })
                                .await;
                            if self.cancel_midway {
                                let half = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
                                agent.conn.send_data(stream, half).await.unwrap();
                                agent
                                    .send(Message::Cancel {
                                        reason: "canceled by the test".into(),
                                        grace_ms: 1000,
                                    })
                                    .await;
                            }
                            let from = if self.cancel_midway {
                                bytes.len() / 2
                            } else {
                                0
                            };
                            // After a cancel the agent may end the task and close the socket
                            // while the rest is on its way: a failed send is not an error then.
                            let mut sent = true;
                            for chunk in bytes[from..].chunks(100_000) {
                                let chunk = Bytes::copy_from_slice(chunk);
                                sent = agent.conn.send_data(stream, chunk).await.is_ok();
                                if !sent {
                                    break;
                                }
                            }
                            let end = Message::End {
                                stream,
                                error: None,
                            };
                            if sent && agent.conn.send(&end).await.is_err() {
                                assert!(self.cancel_midway, "the task-agent hung up");
                            }
                        }
                    }
                }
                // Every download was sent whole, `End` included, before this arrives.
                Incoming::Message(Message::Abandon { stream, .. }) => self.abandoned.push(stream),
                other => {
                    let done = matches!(other, Incoming::Message(Message::TaskFinished { .. }));
                    report.record(other);
                    if done {
                        break;
                    }
                }
            }
        }
        let (exit, stderr) = agent.exit().await;
        report.exit = Some(exit);
        report.stderr = stderr;
        report
    }

    async fn run(&mut self, steps: Vec<Step>, dir: &Path) -> Report {
        let task = task(steps);
        let agent = Agent::start(&task, dir).await;
        self.serve(agent).await
    }
}

fn save(key: &str, paths: &[&str]) -> Step {
    Step::SaveCache(SaveCacheStep {
        name: "Saving cache".into(),
        key: key.into(),
        paths: paths.iter().map(|path| path.to_string()).collect(),
        when: When::OnSuccess,
    })
}

fn restore(keys: &[&str]) -> Step {
    Step::RestoreCache(RestoreCacheStep {
        name: "Restoring cache".into(),
        keys: keys.iter().map(|key| key.to_string()).collect(),
    })
}

fn shell(command: &str) -> Step {
    step(run("shell", command))
}

#[tokio::test]
async fn a_cache_saves_and_restores_through_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let mut peer = Peer::default();
    let report = peer
        .run(
            vec![
                shell(
                    "mkdir -p deps/sub empty && echo hi > deps/sub/a && ln -s sub/a deps/link \
                     && head -c 3000000 /dev/urandom > deps/big && cp deps/big big.copy \
                     && printf lock > lock.txt",
                ),
                save(
                    "v1-{{ .Branch }}-{{ checksum \"lock.txt\" }}",
                    &["deps", "empty", "missing"],
                ),
                save("v1-{{ .Branch }}-{{ checksum \"lock.txt\" }}", &["deps"]),
                shell("rm -rf deps empty"),
                restore(&["v1-nomatch-", "v1-"]),
                shell(
                    "test \"$(cat deps/sub/a)\" = hi && test \"$(readlink deps/link)\" = sub/a \
                     && test -d empty && cmp deps/big big.copy",
                ),
                restore(&["v2-{{ .Revision }}", "v2-"]),
            ],
            dir.path(),
        )
        .await;
    report.assert_clean_exit();
    for index in 0..7 {
        assert_eq!(
            report.finished(index).0,
            StepStatus::Success,
            "step {index}: {}",
            report.log(index)
        );
    }
    // sha256("lock"), base64.
    let key = "v1-main-DAMFhpRf5QS2BOzC6HXDjt5ADNXNc9qXMDAhYuawLG8=";
    assert_eq!(peer.blobs.len(), 1);
    assert_eq!(peer.blobs[0].1, key);
    let saved = report.log(1);
    assert!(saved.contains("Warning: could not find"), "{saved}");
    assert!(
        saved.contains(&format!("Stored cache {key} (2 files")),
        "{saved}"
    );
    let again = report.log(2);
    assert!(
        again.contains(&format!(
            "Skipping cache generation, cache already exists for key: {key}"
        )),
        "{again}"
    );
    let restored = report.log(4);
    assert!(
        restored.contains(&format!("Found a cache at {key}")),
        "{restored}"
    );
    assert!(restored.contains("Unarchived cache in"), "{restored}");
    let missed = report.log(6);
    assert_eq!(
        missed,
        "No cache is found for key: v2-0123456789abcdef0123456789abcdef01234567\nNo cache is found for key: v2-\n"
    );
}

#[tokio::test]
async fn a_corrupt_cache_fails_the_restore_and_leaves_nothing() {
    let first = tempfile::tempdir().unwrap();
    let mut peer = Peer::default();
    let report = peer
        .run(
            vec![
                shell(
                    "mkdir -p deps && head -c 2000000 /dev/urandom > deps/blob && echo x > deps/x",
                ),
                save("v1-deps", &["deps"]),
            ],
            first.path(),
        )
        .await;
    assert_eq!(
        report.finished(1).0,
        StepStatus::Success,
        "{}",
        report.log(1)
    );
    let bytes = &mut peer.blobs[0].2;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let second = tempfile::tempdir().unwrap();
    let report = peer
        .run(
            vec![restore(&["v1-"]), shell("echo not reached")],
            second.path(),
        )
        .await;
    report.assert_clean_exit();
    assert_eq!(report.finished(0).0, StepStatus::Failed);
    let log = report.log(0);
    assert!(
        log.contains("cannot restore the cache v1-deps: corrupt or incomplete archive")
            && log.contains("what it had unpacked was removed"),
        "{log}"
    );
    assert!(
        !second.path().join("deps").exists(),
        "a half-restored tree was left"
    );
}

#[tokio::test]
async fn a_restore_canceled_midway_stops_and_leaves_nothing() {
    let first = tempfile::tempdir().unwrap();
    let mut peer = Peer::default();
    let report = peer
        .run(
            vec![
                shell("mkdir -p deps/a && head -c 3000000 /dev/urandom > deps/a/blob"),
                save("v1-deps", &["deps"]),
            ],
            first.path(),
        )
        .await;
    assert_eq!(
        report.finished(1).0,
        StepStatus::Success,
        "{}",
        report.log(1)
    );
    peer.cancel_midway = true;
    let second = tempfile::tempdir().unwrap();
    let report = peer.run(vec![restore(&["v1-"])], second.path()).await;
    report.assert_clean_exit();
    assert_eq!(
        report.finished(0).0,
        StepStatus::Canceled,
        "{}",
        report.log(0)
    );
    assert!(
        report.log(0).contains("Canceled: canceled by the test"),
        "{}",
        report.log(0)
    );
    assert!(
        !second.path().join("deps").exists(),
        "a half-restored tree was left"
    );
}

fn persist(paths: &[&str]) -> Step {
    Step::PersistToWorkspace(PersistToWorkspaceStep {
        name: "Persisting to workspace".into(),
        root: ".".into(),
        paths: paths.iter().map(|path| path.to_string()).collect(),
    })
}

fn attach(at: &str) -> Step {
    Step::AttachWorkspace(AttachWorkspaceStep {
        name: "Attaching workspace".into(),
        at: at.into(),
    })
}

fn layer(id: &str, job: &str, requires: &[&str], peer: &Peer) -> WorkspaceLayer {
    let size = peer
        .blobs
        .iter()
        .find(|(_, name, _)| name == id)
        .map_or(0, |(_, _, bytes)| bytes.len() as u64);
    WorkspaceLayer {
        id: id.into(),
        job_name: job.into(),
        job_id: format!("{job}-id"),
        size,
        requires: requires.iter().map(|name| name.to_string()).collect(),
    }
}

#[tokio::test]
async fn a_workspace_persists_and_attaches_and_unrelated_layers_conflict() {
    let upstream = tempfile::tempdir().unwrap();
    let mut peer = Peer::default();
    let report = peer
        .run(
            vec![
                shell("mkdir -p out/sub && echo a > out/a.txt && echo c > out/sub/c.txt && echo n > notes.md"),
                persist(&["out", "*.md"]),
                persist(&["nothing-*"]),
            ],
            upstream.path(),
        )
        .await;
    assert_eq!(
        report.finished(1).0,
        StepStatus::Success,
        "{}",
        report.log(1)
    );
    assert_eq!(report.finished(2).0, StepStatus::Failed);
    assert!(
        report
            .log(2)
            .contains("The specified paths did not match any files in"),
        "{}",
        report.log(2)
    );
    assert_eq!(peer.blobs.len(), 1);

    // Nothing persisted upstream: the attach fails.
    let downstream = tempfile::tempdir().unwrap();
    let report = peer.run(vec![attach("ws")], downstream.path()).await;
    assert_eq!(report.finished(0).0, StepStatus::Failed);
    assert!(
        report.log(0).contains("no workspace to attach"),
        "{}",
        report.log(0)
    );

    // One layer, attached under `ws`.
    peer.manifest = Some(WorkspaceManifest {
        layers: vec![layer("layer-1", "build", &[], &peer)],
    });
    let report = peer
        .run(
            vec![
                attach("ws"),
                shell("test \"$(cat ws/out/a.txt ws/out/sub/c.txt ws/notes.md)\" = \"$(printf 'a\\nc\\nn')\""),
            ],
            downstream.path(),
        )
        .await;
    assert_eq!(
        report.finished(0).0,
        StepStatus::Success,
        "{}",
        report.log(0)
    );
    assert_eq!(
        report.finished(1).0,
        StepStatus::Success,
        "{}",
        report.log(1)
    );

    // The same layer again from a job that requires the first: an overwrite, not a conflict.
    peer.manifest = Some(WorkspaceManifest {
        layers: vec![
            layer("layer-1", "build", &[], &peer),
            layer("layer-1", "test", &["build"], &peer),
        ],
    });
    let other = tempfile::tempdir().unwrap();
    let report = peer.run(vec![attach(".")], other.path()).await;
    assert_eq!(
        report.finished(0).0,
        StepStatus::Success,
        "{}",
        report.log(0)
    );

    // From two jobs that do not depend on each other: CircleCI's conflict, nothing left.
    peer.manifest = Some(WorkspaceManifest {
        layers: vec![
            layer("layer-1", "build-a", &[], &peer),
            layer("layer-1", "build-b", &[], &peer),
        ],
    });
    let conflicted = tempfile::tempdir().unwrap();
    let report = peer.run(vec![attach("ws")], conflicted.path()).await;
    assert_eq!(report.finished(0).0, StepStatus::Failed);
    let log = report.log(0);
    assert!(
        log.contains("Concurrent upstream jobs persisted the same file(s) into the workspace")
            && log.contains("`build-a`")
            && log.contains("`build-b`"),
        "{log}"
    );
    let left: Vec<_> = std::fs::read_dir(conflicted.path().join("ws"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "the attach left {left:?}");
}
