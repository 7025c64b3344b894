//! Control messages. Each one travels as the JSON payload of one control frame.

use serde::{Deserialize, Serialize};

use crate::task::TaskSpec;

/// Every control message of the protocol, in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// task-agent -> launch-agent, first message on the socket.
    Hello {
        protocol_version: u32,
        agent_version: String,
        /// The one-time token a task-agent started through `runner.command_prefix` read on its
        /// stdin: it proves the connection on the listening socket comes from that task-agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// launch-agent -> task-agent: the task to run.
    Welcome { task: Box<TaskSpec> },
    /// launch-agent -> task-agent: the handshake failed; the task-agent exits.
    Refused { reason: String },
    /// task-agent -> launch-agent: step `step` (index into the task's steps) begins; its log is
    /// data stream `log` (opened by this message, closed by the step's `StepFinished`).
    StepStarted { step: u32, name: String, log: u32 },
    /// task-agent -> launch-agent: step `step` ended; every log byte of it was sent before this.
    StepFinished {
        step: u32,
        status: StepStatus,
        exit_code: Option<i32>,
        duration_ms: u64,
    },
    /// task-agent -> launch-agent: the last message of a task.
    TaskFinished { status: TaskStatus },
    /// launch-agent -> task-agent: stop the running step (SIGTERM, then SIGKILL after `grace_ms`).
    Cancel { reason: String, grace_ms: u64 },
    /// task-agent -> launch-agent: opens stream `stream` to store an object of `kind` named
    /// `name` (a cache key, an artifact's destination path, a workspace layer, a test-results
    /// file). Its bytes follow as data frames, then [`Message::End`]. The launch-agent answers
    /// with exactly one [`Message::Uploaded`], possibly before the `End` (it refused the object
    /// early: it then discards the stream's data until the `End`).
    Upload {
        stream: u32,
        kind: BlobKind,
        name: String,
    },
    /// task-agent -> launch-agent: opens stream `stream` to fetch an object of `kind`. `keys`
    /// say which, in the kind's own terms (for a cache: key prefixes tried in order, the most
    /// recently saved match of the first matching prefix wins). Answered with
    /// [`Message::Found`], data frames and [`Message::End`], or with [`Message::NotFound`].
    Download {
        stream: u32,
        kind: BlobKind,
        keys: Vec<String>,
    },
    /// Either direction, from the side that sends `stream`'s data: no more data follows. With
    /// `error`, the stream is incomplete (the sender gave up) and its receiver discards it.
    End {
        stream: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// launch-agent -> task-agent: what became of upload `stream`.
    Uploaded { stream: u32, outcome: UploadOutcome },
    /// launch-agent -> task-agent: download `stream` matched the object stored under `key`
    /// (`size` bytes, when known); its data frames and `End` follow.
    Found {
        stream: u32,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// launch-agent -> task-agent: nothing matches download `stream`; the stream is closed.
    NotFound { stream: u32 },
    /// task-agent -> launch-agent: the task-agent wants no more of download `stream` (a corrupt
    /// archive, a failed step). The launch-agent stops sending and ends the stream with an
    /// `End`; data already on the way is discarded.
    Abandon { stream: u32, reason: String },
}

impl Message {
    /// A short name for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Refused { .. } => "refused",
            Message::StepStarted { .. } => "step_started",
            Message::StepFinished { .. } => "step_finished",
            Message::TaskFinished { .. } => "task_finished",
            Message::Cancel { .. } => "cancel",
            Message::Upload { .. } => "upload",
            Message::Download { .. } => "download",
            Message::End { .. } => "end",
            Message::Uploaded { .. } => "uploaded",
            Message::Found { .. } => "found",
            Message::NotFound { .. } => "not_found",
            Message::Abandon { .. } => "abandon",
        }
    }

    /// The data stream this message opens: a step's log, an upload or a download.
    pub fn opens_stream(&self) -> Option<u32> {
        match self {
            Message::StepStarted { log, .. } => Some(*log),
            Message::Upload { stream, .. } | Message::Download { stream, .. } => Some(*stream),
            _ => None,
        }
    }
}

/// What an upload or a download carries; each kind has its own namespace of names and keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobKind {
    /// `store_artifacts`: one file, named by its destination path.
    Artifact,
    /// `save_cache` / `restore_cache`: one archive, named by its key.
    Cache,
    /// `persist_to_workspace` / `attach_workspace`: one layer archive.
    Workspace,
    /// `store_test_results`: one results file.
    TestResults,
}

impl BlobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobKind::Artifact => "artifact",
            BlobKind::Cache => "cache",
            BlobKind::Workspace => "workspace",
            BlobKind::TestResults => "test_results",
        }
    }
}

/// The launch-agent's answer to an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum UploadOutcome {
    /// Every byte up to the `End` is stored.
    Stored,
    /// An object of that name exists and is never overwritten (caches); the bytes were dropped.
    Exists,
    /// Not stored, for `message` (a limit, the server, an aborted stream).
    Failed { message: String },
}

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Success,
    Failed,
    Canceled,
    /// Not run because of its `when` condition.
    Skipped,
}

/// How the whole task ended, as seen by the task-agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Success,
    Failed,
    Canceled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Success => "success",
            TaskStatus::Failed => "failed",
            TaskStatus::Canceled => "canceled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_a_stable_json_shape() {
        let msg = Message::StepFinished {
            step: 2,
            status: StepStatus::Failed,
            exit_code: Some(3),
            duration_ms: 12,
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"step_finished","step":2,"status":"failed","exit_code":3,"duration_ms":12}"#
        );
        let back: Message = serde_json::from_str(&serde_json::to_string(&msg).unwrap()).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn unknown_message_type_is_an_error() {
        let err = serde_json::from_str::<Message>(r#"{"type":"format_disk"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }
}
