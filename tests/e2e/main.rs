//! End-to-end tests: real server, launch-agent and task-agent processes, real git, loopback only.

mod auth;
mod containment;
mod isolation;
mod pipeline;
