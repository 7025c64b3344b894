//! Statuses as types. Each enum serializes (serde and SQL alike) to the exact strings CircleCI
//! uses, so the database columns and the JSON answers read as before: `success`, `failed`,
//! `canceled`, `infrastructure_fail`, `not_run`, `blocked`, `queued`, `running`, `on_hold`,
//! `timedout`.

use std::fmt;

/// Defines a string enum: `as_str`, `parse`, `Display`, serde and sqlx in one place, so the
/// string of each variant is written once. The sqlx impls go through `str` for any database,
/// so the columns are plain text on SQLite and PostgreSQL alike (sqlx's derive would want a
/// PostgreSQL enum type), and a value no variant spells fails to decode, naming the value.
macro_rules! string_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            #[allow(dead_code)] // Not every enum's list is used yet.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The string CircleCI (and the database) uses.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant spelled `text`, if any.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&'q str as sqlx::Encode<'q, DB>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<$name, sqlx::error::BoxDynError> {
                let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                $name::parse(text).ok_or_else(|| {
                    format!("`{text}` is not a {}", stringify!($name)).into()
                })
            }
        }
    };
}

string_enum! {
    /// A job's status, CircleCI's set. bosun does not set `on_hold` or `timedout` yet (approvals
    /// and job timeouts come later); they are here so the column's domain is CircleCI's.
    pub enum JobStatus {
        Blocked = "blocked",
        Queued = "queued",
        Running = "running",
        OnHold = "on_hold",
        Success = "success",
        Failed = "failed",
        Canceled = "canceled",
        InfrastructureFail = "infrastructure_fail",
        NotRun = "not_run",
        Timedout = "timedout",
    }
}

impl JobStatus {
    /// Whether the job ended (it will not change again). Agrees with
    /// `bosun_api::job_status_is_final`, which clients use on the JSON strings.
    pub fn is_final(self) -> bool {
        self.outcome().is_some()
    }

    /// How the job counts in its workflow's roll-up, once it ended.
    pub fn outcome(self) -> Option<Outcome> {
        match self {
            JobStatus::Blocked | JobStatus::Queued | JobStatus::Running | JobStatus::OnHold => None,
            JobStatus::Success => Some(Outcome::Success),
            JobStatus::Canceled => Some(Outcome::Canceled),
            JobStatus::Failed
            | JobStatus::InfrastructureFail
            | JobStatus::NotRun
            | JobStatus::Timedout => Some(Outcome::Failed),
        }
    }
}

string_enum! {
    /// A task's status: one task runs one node (parallel index) of a job.
    pub enum TaskStatus {
        Queued = "queued",
        Running = "running",
        Success = "success",
        Failed = "failed",
        Canceled = "canceled",
        InfrastructureFail = "infrastructure_fail",
    }
}

impl TaskStatus {
    /// The results a runner may report for its task.
    pub const RESULTS: &'static [TaskStatus] = &[
        TaskStatus::Success,
        TaskStatus::Failed,
        TaskStatus::Canceled,
        TaskStatus::InfrastructureFail,
    ];

    /// The job status a task's status gives its job.
    pub fn job_status(self) -> JobStatus {
        match self {
            TaskStatus::Queued => JobStatus::Queued,
            TaskStatus::Running => JobStatus::Running,
            TaskStatus::Success => JobStatus::Success,
            TaskStatus::Failed => JobStatus::Failed,
            TaskStatus::Canceled => JobStatus::Canceled,
            TaskStatus::InfrastructureFail => JobStatus::InfrastructureFail,
        }
    }
}

string_enum! {
    /// A step's status, as the task-agent reports it.
    pub enum StepStatus {
        Running = "running",
        Success = "success",
        Failed = "failed",
        Canceled = "canceled",
        Skipped = "skipped",
    }
}

string_enum! {
    /// A workflow's status.
    pub enum WorkflowStatus {
        Running = "running",
        Success = "success",
        Failed = "failed",
        Canceled = "canceled",
    }
}

impl WorkflowStatus {
    /// How the workflow counts in its pipeline's roll-up, once it ended.
    pub fn outcome(self) -> Option<Outcome> {
        match self {
            WorkflowStatus::Running => None,
            WorkflowStatus::Success => Some(Outcome::Success),
            WorkflowStatus::Failed => Some(Outcome::Failed),
            WorkflowStatus::Canceled => Some(Outcome::Canceled),
        }
    }
}

string_enum! {
    /// bosun's summary of a pipeline's workflows; `error` when its config did not compile.
    pub enum PipelineStatus {
        Running = "running",
        Success = "success",
        Failed = "failed",
        Canceled = "canceled",
        Error = "error",
    }
}

string_enum! {
    /// CircleCI's pipeline state: whether the config compiled.
    pub enum PipelineState {
        Created = "created",
        Errored = "errored",
    }
}

/// How something that ended counts when its parent's status is rolled up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed,
    Canceled,
}

impl Outcome {
    /// The roll-up rule, for a workflow's jobs and a pipeline's workflows alike: success when
    /// every part succeeded (no parts is a success), else canceled when any part was canceled,
    /// else failed.
    pub fn roll_up(parts: impl IntoIterator<Item = Outcome>) -> Outcome {
        let mut all_success = true;
        let mut any_canceled = false;
        for part in parts {
            all_success &= part == Outcome::Success;
            any_canceled |= part == Outcome::Canceled;
        }
        if all_success {
            Outcome::Success
        } else if any_canceled {
            Outcome::Canceled
        } else {
            Outcome::Failed
        }
    }
}

impl From<Outcome> for WorkflowStatus {
    fn from(outcome: Outcome) -> WorkflowStatus {
        match outcome {
            Outcome::Success => WorkflowStatus::Success,
            Outcome::Failed => WorkflowStatus::Failed,
            Outcome::Canceled => WorkflowStatus::Canceled,
        }
    }
}

impl From<Outcome> for PipelineStatus {
    fn from(outcome: Outcome) -> PipelineStatus {
        match outcome {
            Outcome::Success => PipelineStatus::Success,
            Outcome::Failed => PipelineStatus::Failed,
            Outcome::Canceled => PipelineStatus::Canceled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_spell_circleci_strings_in_json_and_back() {
        let expected = [
            "blocked",
            "queued",
            "running",
            "on_hold",
            "success",
            "failed",
            "canceled",
            "infrastructure_fail",
            "not_run",
            "timedout",
        ];
        let spelled: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(spelled, expected);
        for status in JobStatus::ALL {
            let json = serde_json::to_string(status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(serde_json::from_str::<JobStatus>(&json).unwrap(), *status);
            assert_eq!(JobStatus::parse(status.as_str()), Some(*status));
        }
        assert_eq!(JobStatus::parse("Success"), None);
        for status in TaskStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status.job_status()));
        }
    }

    #[test]
    fn final_job_statuses_agree_with_the_api_crate() {
        for status in JobStatus::ALL {
            let ours = status.is_final();
            let theirs = bosun_api::job_status_is_final(status.as_str());
            // The API crate does not know `timedout` yet; every other status agrees.
            if *status != JobStatus::Timedout {
                assert_eq!(ours, theirs, "{status}");
            }
        }
        assert!(JobStatus::Timedout.is_final());
    }

    #[test]
    fn roll_up_is_success_only_when_all_succeeded_and_canceled_beats_failed() {
        use Outcome::*;
        assert_eq!(Outcome::roll_up([]), Success);
        assert_eq!(Outcome::roll_up([Success, Success]), Success);
        assert_eq!(Outcome::roll_up([Success, Failed]), Failed);
        assert_eq!(Outcome::roll_up([Failed, Canceled, Success]), Canceled);
        assert_eq!(Outcome::roll_up([Canceled]), Canceled);
        assert_eq!(
            JobStatus::NotRun.outcome(),
            Some(Failed),
            "a job that did not run fails its workflow"
        );
        assert_eq!(JobStatus::Queued.outcome(), None);
        assert_eq!(WorkflowStatus::Running.outcome(), None);
    }
}

string_enum! {
    /// A user's role (issue 13): what their tokens may do.
    pub enum Role {
        Viewer = "viewer",
        Member = "member",
        Admin = "admin",
    }
}

impl Role {
    /// Whether this role may do what `needed` may: admin > member > viewer.
    pub fn includes(self, needed: Role) -> bool {
        let rank = |role: Role| match role {
            Role::Viewer => 0,
            Role::Member => 1,
            Role::Admin => 2,
        };
        rank(self) >= rank(needed)
    }
}
