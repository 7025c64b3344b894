//! Integration tests: the real `task-agent` binary, driven over a real socketpair by a test that
//! plays the launch-agent.

mod blobs;
mod checkout;
mod cli;
mod control;
mod harness;
mod junit;
mod masking;
mod ssh;
// The workspace's sshd harness, shared as a file: this crate cannot depend on bosun_tests.
#[allow(dead_code)]
#[path = "../../../../tests/sshd.rs"]
mod sshd;
mod steps;
mod streams;
mod test_results;
