//! Integration tests: the real `task-agent` binary, driven over a real socketpair by a test that
//! plays the launch-agent.

mod blobs;
mod checkout;
mod cli;
mod control;
mod harness;
mod junit;
mod masking;
mod steps;
mod streams;
mod test_results;
