//! Integration tests of `bosun_config`: the public API only.

mod compile;
mod corpus;
mod errors;
mod errors21;
mod fuzz;
mod limits;
mod packing;
mod process;
// Left out on the emulated targets with its dependency (see Cargo.toml).
#[cfg(not(any(target_arch = "s390x", target_arch = "powerpc64")))]
mod schema;

use bosun_config::{ConfigError, Pipeline};

/// Compiles `source` as `config.yml`, failing the test on an error.
pub fn ok(source: &str) -> Pipeline {
    match bosun_config::compile(source, "config.yml") {
        Ok(pipeline) => pipeline,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Compiles `source` as `config.yml`, expecting an error.
pub fn err(source: &str) -> ConfigError {
    match bosun_config::compile(source, "config.yml") {
        Ok(pipeline) => panic!("expected an error, got {pipeline:#?}"),
        Err(e) => e,
    }
}

/// The error's display form.
pub fn err_text(source: &str) -> String {
    err(source).to_string()
}
