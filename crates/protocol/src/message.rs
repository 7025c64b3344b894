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
    /// task-agent -> launch-agent: step `step` (index into the task's steps) begins.
    StepStarted { step: u32, name: String },
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
        }
    }
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
