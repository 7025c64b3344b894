//! End-to-end tests: real server, launch-agent and task-agent processes, real git, loopback only.

mod artifacts;
mod auth;
mod caches;
mod checkout_keys;
mod circleci_commands;
mod clients;
mod concurrency;
mod connections;
mod containment;
mod faults;
mod hardening;
mod isolation;
mod log_limits;
mod masking;
mod masking_bench;
mod metrics;
mod parallelism;
mod pipeline;
mod quickstart;
mod restart;
mod secrets;
mod server_hardening;
mod spool;
mod test_results;
mod tls;
mod users;
