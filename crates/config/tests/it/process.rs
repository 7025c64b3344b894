//! Snapshots of `process` (what `bosun config process` prints) for configs covering each 2.1
//! feature: `process/NAME.yml` -> `process/NAME.expected.yml`. A first line
//! `# ctx: {json}` sets the pipeline context (`"orb_dir": true` uses `orbs/`). Refresh the
//! snapshots with `UPDATE_EXPECT=1 cargo test -p bosun-config`.

use std::path::{Path, PathBuf};

use bosun_config::PipelineContext;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/process");
const ORBS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/orbs");

/// The context a snapshot config asks for on its first line.
pub fn context(text: &str) -> PipelineContext {
    let mut ctx = PipelineContext::default();
    let Some(json) = text.lines().next().and_then(|l| l.strip_prefix("# ctx: ")) else {
        return ctx;
    };
    let v: serde_json::Value = serde_json::from_str(json).expect("ctx line is JSON");
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    ctx.branch = s("branch");
    ctx.tag = s("tag");
    ctx.revision = s("revision");
    ctx.id = s("id");
    ctx.git_url = s("git_url");
    ctx.trigger_source = s("trigger_source");
    ctx.project_slug = s("project_slug");
    ctx.number = v.get("number").and_then(|n| n.as_u64());
    if let Some(p) = v.get("parameters").and_then(|p| p.as_object()) {
        ctx.parameters = p.clone();
    }
    if v.get("orb_dir").and_then(|b| b.as_bool()) == Some(true) {
        ctx.orb_dir = Some(PathBuf::from(ORBS));
    }
    ctx
}

pub fn configs() -> Vec<(PathBuf, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .expect("snapshot dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yml")
                && !p.to_string_lossy().ends_with(".expected.yml")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable");
            (p, text)
        })
        .collect()
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn process_snapshots() {
    let configs = configs();
    assert!(
        configs.len() >= 15,
        "only {} snapshot configs",
        configs.len()
    );
    for (path, text) in configs {
        let name = stem(&path);
        let out = match bosun_config::process(&text, &format!("{name}.yml"), &context(&text)) {
            Ok(yaml) => yaml,
            Err(e) => panic!("{name}: {e}"),
        };
        expect_test::expect_file![format!("{DIR}/{name}.expected.yml")].assert_eq(&out);
        // The output is a valid config in its own right, and compiles to the same pipeline.
        let again = bosun_config::compile(&out, "processed.yml")
            .unwrap_or_else(|e| panic!("{name}: processed output does not compile: {e}"));
        let mut direct = bosun_config::compile_pipeline(&text, "c.yml", &context(&text))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // The processed form no longer says which orb or named executor a job came from.
        for job in direct.jobs.values_mut() {
            job.orb = None;
            job.executor_name = None;
            job.executor_orb = None;
        }
        assert_eq!(again.jobs, direct.jobs, "{name}");
    }
}
