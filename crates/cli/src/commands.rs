//! One function per command; each returns the exit code or a [`Failure`].

use std::io::Write;

use bosun_api::{
    Auth, Client, CreateProject, CreateResourceClass, CreateToken, InstanceFilter, Project,
    ResourceClass, Token, TriggerPipeline,
};

use crate::{
    CacheCommand, Cli, Command, ConfigCommand, Failure, InstanceCommand, JobCommand,
    PipelineCommand, ProjectCommand, ResourceClassCommand, RunArgs, RunnerCommand, TokenCommand,
    follow,
};

pub async fn dispatch(cli: Cli) -> Result<u8, Failure> {
    let (given, registry) = match &cli.command {
        Command::Config(_) | Command::Orb(_) => (registry_if_given(&cli)?, Some(registry_of(&cli))),
        _ => (None, None),
    };
    match cli.command {
        Command::Config(ConfigCommand::Validate { file, orb_dir }) => {
            validate(&file, orb_dir, given.as_ref()).await
        }
        Command::Config(ConfigCommand::Process {
            file,
            pipeline_parameters,
            orb_dir,
        }) => {
            process(
                &file,
                pipeline_parameters.as_deref(),
                orb_dir,
                given.as_ref(),
            )
            .await
        }
        Command::Orb(command) => {
            let registry = registry.unwrap_or_else(|| Err(Failure::input("no server")));
            crate::orbs::orb(command, given, registry).await
        }
        Command::Quickstart(args) => crate::quickstart::run(args).await,
        command => {
            let token = cli.token.clone().ok_or_else(|| {
                Failure::input(
                    "no token: pass --token or set BOSUN_TOKEN (the server's admin token)",
                )
            })?;
            let options = bosun_api::ConnectOptions {
                ca_file: cli.ca_file.clone(),
                proxy: None,
            };
            let client = Client::with_options(&cli.host, bosun_api::Timeouts::default(), &options)
                .map_err(|err| Failure::input(err.to_string()))?;
            let auth = Auth::CircleToken(token);
            let ctx = Ctx { client, auth };
            match command {
                Command::Runner(command) => runner(&ctx, command).await,
                Command::Project(ProjectCommand::Create {
                    slug,
                    git_url,
                    namespace,
                }) => {
                    let project = ctx
                        .create_project(&slug, &git_url, namespace.as_deref())
                        .await?;
                    // Servers before namespaces answer without one.
                    if project.namespace.is_empty() {
                        println!("created project {} ({})", project.slug, project.git_url);
                    } else {
                        println!(
                            "created project {} ({}) in namespace {}",
                            project.slug, project.git_url, project.namespace
                        );
                    }
                    if let Some(warning) = &project.warning {
                        eprintln!("warning: {warning}");
                    }
                    Ok(0)
                }
                Command::Project(ProjectCommand::Env(command)) => {
                    crate::secrets::project_env(&ctx, command).await
                }
                Command::Project(ProjectCommand::CheckoutKey(command)) => {
                    crate::secrets::checkout_key(&ctx, command).await
                }
                Command::Project(ProjectCommand::SshKey(command)) => {
                    crate::secrets::ssh_key(&ctx, command).await
                }
                Command::Project(ProjectCommand::KnownHosts(command)) => {
                    crate::secrets::known_hosts(&ctx, command).await
                }
                Command::Project(ProjectCommand::CheckoutToken(command)) => {
                    crate::secrets::checkout_token(&ctx, command).await
                }
                Command::Context(command) => crate::secrets::context(&ctx, command).await,
                Command::User(command) => crate::users::user(&ctx, command).await,
                Command::Token(command) => crate::users::token(&ctx, command).await,
                Command::Release(command) => crate::releases::release(&ctx, command).await,
                Command::Pipeline(PipelineCommand::Run(args)) => pipeline_run(&ctx, args).await,
                Command::Pipeline(PipelineCommand::Status { id }) => {
                    pipeline_status(&ctx, &id).await
                }
                Command::Job(JobCommand::Logs { job, node }) => {
                    let job = ctx.job_id(&job).await?;
                    job_logs(&ctx, &job, node).await
                }
                Command::Job(JobCommand::Cancel { job }) => {
                    let id = ctx.job_id(&job).await?;
                    let message = ctx.client.cancel_job(&ctx.auth, &id).await?;
                    println!("job {job}: {}", message.as_deref().unwrap_or("canceled"));
                    Ok(0)
                }
                Command::Artifacts { job, download } => {
                    let job = ctx.job_id(&job).await?;
                    artifacts(&ctx, &job, download.as_deref()).await
                }
                Command::Tests { job, flaky } => {
                    let job = ctx.job_id(&job).await?;
                    let list = ctx.client.job_tests(&ctx.auth, &job).await?;
                    print!("{}", tests_report(&list.items, flaky));
                    Ok(0)
                }
                Command::Cache(command) => cache(&ctx, command).await,
                Command::Config(_) | Command::Orb(_) | Command::Quickstart(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

/// `bosun artifacts JOB [--download DIR]`.
async fn artifacts(
    ctx: &Ctx,
    job: &str,
    download: Option<&std::path::Path>,
) -> Result<u8, Failure> {
    let list = ctx.client.job_artifacts(&ctx.auth, job).await?;
    let Some(dir) = download else {
        for artifact in &list.items {
            let size = artifact.size.map(|size| size.to_string());
            println!(
                "{} {} {}",
                artifact.path,
                size.as_deref().unwrap_or("-"),
                artifact.url
            );
        }
        return Ok(0);
    };
    for artifact in &list.items {
        let relative = safe_relative(&artifact.path).ok_or_else(|| {
            Failure::failed(format!(
                "artifact path `{}` is absolute or leaves the download directory: not written",
                artifact.path
            ))
        })?;
        let target = dir.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| Failure::failed(format!("creating {}: {err}", parent.display())))?;
        }
        let mut body = ctx
            .client
            .download_artifact(&ctx.auth, &artifact.url)
            .await?;
        let mut file = std::fs::File::create(&target)
            .map_err(|err| Failure::failed(format!("creating {}: {err}", target.display())))?;
        let mut written = 0u64;
        while let Some(chunk) = body.chunk().await? {
            file.write_all(&chunk)
                .map_err(|err| Failure::failed(format!("writing {}: {err}", target.display())))?;
            written += chunk.len() as u64;
        }
        println!("{} {written} {}", artifact.path, target.display());
    }
    Ok(0)
}

/// Lines of a failure message `bosun tests` shows under each failed test.
const MESSAGE_LINES: usize = 10;

/// `bosun tests JOB [--flaky]`: the failed tests with their messages, then a summary line; with
/// `flaky`, only the flaky tests and their count.
fn tests_report(items: &[bosun_api::TestItem], flaky: bool) -> String {
    let label = |item: &bosun_api::TestItem| {
        let mut label = if item.classname.is_empty() {
            item.name.clone()
        } else {
            format!("{} {}", item.classname, item.name)
        };
        if let Some(file) = item.file.as_deref().filter(|file| !file.is_empty()) {
            label.push_str(&format!(" ({file})"));
        }
        label
    };
    let mut out = String::new();
    if flaky {
        let flaky: Vec<_> = items.iter().filter(|item| item.flaky).collect();
        let mut seen = std::collections::BTreeSet::new();
        for item in &flaky {
            if seen.insert(label(item)) {
                out.push_str(&format!("FLAKY {}\n", label(item)));
            }
        }
        out.push_str(&format!("{} flaky tests\n", seen.len()));
        return out;
    }
    let (mut passed, mut failed, mut skipped, mut time) = (0, 0, 0, 0.0f64);
    for item in items {
        time += item.run_time;
        match item.result.as_str() {
            "success" => passed += 1,
            "skipped" => skipped += 1,
            _ => {
                failed += 1;
                let word = if item.result == "error" {
                    "ERROR"
                } else {
                    "FAILED"
                };
                out.push_str(&format!("{word} {} [{:.3}s]\n", label(item), item.run_time));
                if let Some(message) = &item.message {
                    for line in message.lines().take(MESSAGE_LINES) {
                        out.push_str(&format!("    {line}\n"));
                    }
                    if message.lines().count() > MESSAGE_LINES {
                        out.push_str("    ...\n");
                    }
                }
            }
        }
    }
    out.push_str(&format!(
        "{} tests: {passed} passed, {failed} failed, {skipped} skipped, {time:.3}s\n",
        items.len()
    ));
    out
}

/// `bosun cache list SLUG` and `bosun cache delete SLUG KEY_PREFIX`.
async fn cache(ctx: &Ctx, command: CacheCommand) -> Result<u8, Failure> {
    match command {
        CacheCommand::List { slug } => {
            let list = ctx.client.project_caches(&ctx.auth, &slug).await?;
            print!("{}", cache_table(&list.items));
            Ok(0)
        }
        CacheCommand::Delete { slug, key_prefix } => {
            let deleted = ctx
                .client
                .delete_project_caches(&ctx.auth, &slug, &key_prefix)
                .await?;
            let which = if key_prefix.is_empty() {
                String::new()
            } else {
                format!(" with keys starting with `{key_prefix}`")
            };
            println!(
                "deleted {} cache(s) of {slug}{which}, {}",
                deleted.deleted,
                human_size(deleted.bytes)
            );
            Ok(0)
        }
    }
}

/// Caches as a table of aligned columns: key, size, created, expires.
fn cache_table(items: &[bosun_api::CacheEntry]) -> String {
    let rows: Vec<[String; 4]> = items
        .iter()
        .map(|cache| {
            [
                cache.key.clone(),
                human_size(cache.size),
                cache.created_at.clone(),
                cache.expires_at.clone(),
            ]
        })
        .collect();
    let header = ["KEY", "SIZE", "CREATED", "EXPIRES"].map(str::to_owned);
    let mut widths = header.clone().map(|title| title.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:>w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A size as people read it: bytes below 1 KiB, else one decimal of the largest binary unit.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `path` as a relative path of plain components only: `None` for an absolute path or one with
/// `..` (or a root, prefix or nothing at all), which could name a file outside the directory.
fn safe_relative(path: &str) -> Option<std::path::PathBuf> {
    let mut out = std::path::PathBuf::new();
    for component in std::path::Path::new(path).components() {
        match component {
            std::path::Component::Normal(part) => out.push(part),
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

/// A client and the credentials every command of this run sends.
pub struct Ctx {
    pub client: Client,
    pub auth: Auth,
}

impl Ctx {
    /// The id of the job `job` names: `SLUG/NUMBER` (CircleCI's project slug and job number,
    /// `gh/acme/widgets/42`) is looked up; anything else is taken as the job's id.
    pub async fn job_id(&self, job: &str) -> Result<String, Failure> {
        let Some((slug, number)) = job_reference(job) else {
            return Ok(job.to_owned());
        };
        let detail = self.client.project_job(&self.auth, slug, number).await?;
        detail["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Failure::failed(format!("the server answered job {job} without an id")))
    }

    // The few calls more than one command (and the quickstart) make, with their request bodies
    // built from plain arguments.

    pub async fn create_resource_class(
        &self,
        name: &str,
        description: &str,
    ) -> Result<ResourceClass, Failure> {
        let request = CreateResourceClass {
            resource_class: name.to_owned(),
            description: description.to_owned(),
        };
        Ok(self
            .client
            .create_resource_class(&self.auth, &request)
            .await?)
    }

    pub async fn create_token(
        &self,
        resource_class: &str,
        nickname: &str,
    ) -> Result<Token, Failure> {
        let request = CreateToken {
            resource_class: resource_class.to_owned(),
            nickname: nickname.to_owned(),
        };
        Ok(self.client.create_token(&self.auth, &request).await?)
    }

    pub async fn create_project(
        &self,
        slug: &str,
        git_url: &str,
        namespace: Option<&str>,
    ) -> Result<Project, Failure> {
        let request = CreateProject {
            slug: slug.to_owned(),
            git_url: git_url.to_owned(),
            namespace: namespace.map(str::to_owned),
        };
        Ok(self.client.create_project(&self.auth, &request).await?)
    }
}

/// `vcs/org/repo/NUMBER` (a job's or a pipeline's) split into the slug and the number.
fn job_reference(job: &str) -> Option<(&str, u64)> {
    let (slug, number) = job.rsplit_once('/')?;
    if slug.split('/').count() != 3 || slug.split('/').any(str::is_empty) {
        return None;
    }
    Some((slug, number.parse().ok()?))
}

/// The server's registry, when `--host` (or `BOSUN_HOST`) was given.
fn registry_if_given(cli: &Cli) -> Result<Option<crate::orbs::Registry>, Failure> {
    if cli.host_given {
        registry_of(cli).map(Some)
    } else {
        Ok(None)
    }
}

/// The server's registry: a client for `--host`, with the token if one was given (orbs are
/// read without one).
fn registry_of(cli: &Cli) -> Result<crate::orbs::Registry, Failure> {
    let options = bosun_api::ConnectOptions {
        ca_file: cli.ca_file.clone(),
        proxy: None,
    };
    let client = Client::with_options(&cli.host, bosun_api::Timeouts::default(), &options)
        .map_err(|err| Failure::input(err.to_string()))?;
    let auth = match &cli.token {
        Some(token) => Auth::CircleToken(token.clone()),
        None => Auth::None,
    };
    Ok(crate::orbs::Registry { client, auth })
}

/// The context `config validate` and `process` compile with: orbs from the server's registry
/// when one is given, else from `orb_dir`.
async fn config_context(
    text: &str,
    file: &str,
    parameters: serde_json::Map<String, serde_json::Value>,
    orb_dir: Option<std::path::PathBuf>,
    registry: Option<&crate::orbs::Registry>,
) -> Result<(bosun_config::PipelineContext, String), Failure> {
    let mut ctx = bosun_config::PipelineContext {
        parameters,
        orb_dir,
        ..Default::default()
    };
    let mut header = String::new();
    if let Some(registry) = registry {
        let orbs = crate::orbs::resolve_through(registry, text, file).await?;
        header = orbs.header();
        ctx.orbs = orbs.shared();
    }
    Ok((ctx, header))
}

async fn validate(
    file: &std::path::Path,
    orb_dir: Option<std::path::PathBuf>,
    registry: Option<&crate::orbs::Registry>,
) -> Result<u8, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| Failure::input(format!("reading {}: {err}", file.display())))?;
    let label = file.display().to_string();
    let (ctx, _) = config_context(&text, &label, serde_json::Map::new(), orb_dir, registry).await?;
    match bosun_config::compile_pipeline(&text, &label, &ctx) {
        Ok(pipeline) => {
            println!(
                "{} is valid: {} job(s), {} workflow(s)",
                file.display(),
                pipeline.jobs.len(),
                pipeline.workflows.len()
            );
            Ok(0)
        }
        Err(err) => Err(Failure::input(err.to_string())),
    }
}

async fn process(
    file: &std::path::Path,
    parameters: Option<&str>,
    orb_dir: Option<std::path::PathBuf>,
    registry: Option<&crate::orbs::Registry>,
) -> Result<u8, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| Failure::input(format!("reading {}: {err}", file.display())))?;
    let parameters = match parameters {
        None => serde_json::Map::new(),
        Some(json) => match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => {
                return Err(Failure::input(
                    "--pipeline-parameters must be a JSON object, like '{\"deploy\": true}'",
                ));
            }
            Err(err) => {
                return Err(Failure::input(format!(
                    "--pipeline-parameters is not valid JSON: {err}"
                )));
            }
        },
    };
    let label = file.display().to_string();
    let (ctx, header) = config_context(&text, &label, parameters, orb_dir, registry).await?;
    match bosun_config::process(&text, &label, &ctx) {
        Ok(yaml) => {
            print!("{header}{yaml}");
            Ok(0)
        }
        Err(err) => Err(Failure::input(err.to_string())),
    }
}

async fn find_resource_class(ctx: &Ctx, name: &str) -> Result<ResourceClass, Failure> {
    let namespace = name.split_once('/').map(|(ns, _)| ns).ok_or_else(|| {
        Failure::input(format!(
            "resource class `{name}` must look like `namespace/name`"
        ))
    })?;
    ctx.client
        .resource_classes(&ctx.auth, namespace)
        .await?
        .into_iter()
        .find(|rc| rc.resource_class == name)
        .ok_or_else(|| Failure::input(format!("resource class `{name}` not found")))
}

async fn runner(ctx: &Ctx, command: RunnerCommand) -> Result<u8, Failure> {
    match command {
        RunnerCommand::ResourceClass(ResourceClassCommand::Create {
            resource_class,
            description,
            generate_token,
        }) => {
            let created = ctx
                .create_resource_class(&resource_class, description.as_deref().unwrap_or(""))
                .await?;
            println!(
                "created resource class {} (id {})",
                created.resource_class, created.id
            );
            if generate_token {
                let token = ctx.create_token(&resource_class, "default").await?;
                println!("token (shown once): {}", token.token.unwrap_or_default());
            }
            Ok(0)
        }
        RunnerCommand::ResourceClass(ResourceClassCommand::List { namespace }) => {
            let list = ctx.client.resource_classes(&ctx.auth, &namespace).await?;
            println!("{:<40} {:<36} DESCRIPTION", "RESOURCE CLASS", "ID");
            for rc in list {
                println!("{:<40} {:<36} {}", rc.resource_class, rc.id, rc.description);
            }
            Ok(0)
        }
        RunnerCommand::ResourceClass(ResourceClassCommand::Delete {
            resource_class,
            force,
        }) => {
            let rc = find_resource_class(ctx, &resource_class).await?;
            if force {
                ctx.client
                    .force_delete_resource_class(&ctx.auth, &rc.id)
                    .await?;
            } else {
                ctx.client.delete_resource_class(&ctx.auth, &rc.id).await?;
            }
            println!("deleted resource class {resource_class}");
            Ok(0)
        }
        RunnerCommand::Token(TokenCommand::Create {
            resource_class,
            nickname,
        }) => {
            let token = ctx.create_token(&resource_class, &nickname).await?;
            println!("id:             {}", token.id);
            println!("resource class: {}", token.resource_class);
            println!("nickname:       {}", token.nickname);
            println!("token:          {}", token.token.unwrap_or_default());
            eprintln!("the token is shown only once: store it now");
            Ok(0)
        }
        RunnerCommand::Token(TokenCommand::List { resource_class }) => {
            let list = ctx.client.tokens(&ctx.auth, &resource_class).await?;
            println!(
                "{:<36} {:<24} {:<30} CREATED",
                "ID", "NICKNAME", "RESOURCE CLASS"
            );
            for token in list {
                println!(
                    "{:<36} {:<24} {:<30} {}",
                    token.id, token.nickname, token.resource_class, token.created_at
                );
            }
            Ok(0)
        }
        RunnerCommand::Token(TokenCommand::Delete { id }) => {
            ctx.client.delete_token(&ctx.auth, &id).await?;
            println!("deleted token {id}");
            Ok(0)
        }
        RunnerCommand::Instance(InstanceCommand::List {
            namespace,
            resource_class,
        }) => {
            let filter = match (&resource_class, &namespace) {
                (Some(rc), _) => InstanceFilter::ResourceClass(rc),
                (None, Some(ns)) => InstanceFilter::Namespace(ns),
                (None, None) => {
                    return Err(Failure::input(
                        "give a NAMESPACE or --resource-class NS/NAME",
                    ));
                }
            };
            let list = ctx.client.instances(&ctx.auth, filter).await?;
            println!(
                "{:<30} {:<24} {:<20} {:<16} {:<10} {:<11} {:<26} {:<26} LAST USED",
                "RESOURCE CLASS",
                "NAME",
                "HOSTNAME",
                "IP",
                "VERSION",
                "STATE",
                "FIRST CONNECTED",
                "LAST CONNECTED"
            );
            for runner in list {
                println!(
                    "{:<30} {:<24} {:<20} {:<16} {:<10} {:<11} {:<26} {:<26} {}",
                    runner.resource_class,
                    runner.name,
                    runner.hostname,
                    runner.ip,
                    runner.version,
                    runner.state,
                    runner.first_connected,
                    runner.last_connected,
                    runner.last_used.as_deref().unwrap_or("never")
                );
            }
            Ok(0)
        }
    }
}

async fn pipeline_run(ctx: &Ctx, args: RunArgs) -> Result<u8, Failure> {
    let parameters = match &args.parameters {
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            Ok(_) => return Err(Failure::input("--parameters must be a JSON object")),
            Err(err) => {
                return Err(Failure::input(format!(
                    "--parameters is not valid JSON: {err}"
                )));
            }
        },
        None => None,
    };
    let body = TriggerPipeline {
        branch: args.branch,
        tag: args.tag,
        revision: args.revision,
        parameters,
    };
    let created = ctx
        .client
        .trigger_pipeline(&ctx.auth, &args.slug, &body)
        .await?;
    println!("pipeline {} (#{}) created", created.id, created.number);
    if !args.follow {
        return Ok(0);
    }
    let status = follow::follow(ctx, &created.id).await?;
    Ok(if status == "success" { 0 } else { 1 })
}

async fn pipeline_status(ctx: &Ctx, id: &str) -> Result<u8, Failure> {
    let pipeline = match job_reference(id) {
        Some((slug, number)) => ctx.client.project_pipeline(&ctx.auth, slug, number).await?,
        None => ctx.client.pipeline(&ctx.auth, id).await?,
    };
    let id = pipeline.id.as_str();
    println!(
        "pipeline #{} {} ({}): {}",
        pipeline.number, pipeline.id, pipeline.project_slug, pipeline.status
    );
    for error in &pipeline.errors {
        println!("  error ({}): {}", error.kind, error.message);
    }
    for workflow in ctx.client.workflows(&ctx.auth, id).await? {
        println!("  workflow {}: {}", workflow.name, workflow.status);
        for job in ctx.client.jobs(&ctx.auth, &workflow.id).await? {
            println!(
                "    job {} #{} {}: {}",
                job.name, job.job_number, job.id, job.status
            );
        }
    }
    Ok(match pipeline.status.as_str() {
        "success" | "running" => 0,
        _ => 1,
    })
}

async fn job_logs(ctx: &Ctx, job: &str, node: u32) -> Result<u8, Failure> {
    let detail = ctx.client.job_node(&ctx.auth, job, node).await?;
    let mut out = std::io::stdout().lock();
    for step in &detail.steps {
        let _ = writeln!(out, "==> {}", step.name);
        let mut offset = 0;
        while offset < step.log_length {
            let bytes = follow::read_log(ctx, &detail.id, node, step.index, offset).await?;
            if bytes.is_empty() {
                break;
            }
            offset += bytes.len() as u64;
            let _ = out.write_all(&bytes);
        }
        let _ = writeln!(out, "<== {}: {}", step.name, step.status);
    }
    let _ = writeln!(
        out,
        "job {} #{}: {}",
        detail.name, detail.job_number, detail.status
    );
    Ok(if detail.status == "success" { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::{cache_table, human_size, job_reference, safe_relative, tests_report};

    #[test]
    fn jobs_are_named_by_slug_and_number_or_by_id() {
        assert_eq!(
            job_reference("gh/acme/widgets/42"),
            Some(("gh/acme/widgets", 42))
        );
        assert_eq!(
            job_reference("github/acme/widgets/7"),
            Some(("github/acme/widgets", 7))
        );
        for id in [
            "0b6c6f3a-1c1e-4a6e-9a55-3e0e2f0b9d11",
            "gh/acme/42",
            "gh/acme/widgets/x",
            "gh//widgets/4",
            "a/gh/acme/widgets/4",
        ] {
            assert_eq!(job_reference(id), None, "{id}");
        }
    }

    #[test]
    fn a_tests_report_lists_failures_first_then_a_summary() {
        let item =
            |name: &str, result: &str, run_time: f64, message: Option<&str>| bosun_api::TestItem {
                message: message.map(str::to_owned),
                source: "unit".into(),
                run_time,
                file: Some("t.py".into()),
                result: result.into(),
                name: name.into(),
                classname: "t".into(),
                node_index: 0,
                flaky: name == "b",
            };
        let items = [
            item("a", "success", 0.5, None),
            item("b", "failure", 1.0, Some("boom\nline 2")),
            item("c", "skipped", 0.0, None),
            item("d", "error", 0.25, None),
        ];
        assert_eq!(
            tests_report(&items, false),
            "FAILED t b (t.py) [1.000s]\n    boom\n    line 2\nERROR t d (t.py) [0.250s]\n\
             4 tests: 1 passed, 2 failed, 1 skipped, 1.750s\n"
        );
        assert_eq!(
            tests_report(&items, true),
            "FLAKY t b (t.py)\n1 flaky tests\n"
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(10 << 30), "10.0 GiB");
        assert_eq!(human_size(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn caches_print_as_an_aligned_table() {
        let entry = |key: &str, size: u64| bosun_api::CacheEntry {
            key: key.to_owned(),
            size,
            created_at: "2026-12-01T20:00:00.000Z".into(),
            job_id: "j".into(),
            expires_at: "2026-12-16T20:00:00.000Z".into(),
        };
        let table = cache_table(&[entry("v1-deps-long-key", 3 << 20), entry("v1", 12)]);
        assert_eq!(
            table,
            "KEY                  SIZE  CREATED                   EXPIRES\n\
             v1-deps-long-key  3.0 MiB  2026-12-01T20:00:00.000Z  2026-12-16T20:00:00.000Z\n\
             v1                   12 B  2026-12-01T20:00:00.000Z  2026-12-16T20:00:00.000Z\n"
        );
        assert_eq!(cache_table(&[]), "KEY  SIZE  CREATED  EXPIRES\n");
    }

    #[test]
    fn downloads_stay_inside_their_directory() {
        assert_eq!(
            safe_relative("out/sub/a b.txt"),
            Some(std::path::PathBuf::from("out/sub/a b.txt"))
        );
        assert_eq!(safe_relative("./x"), Some(std::path::PathBuf::from("x")));
        for bad in ["/etc/passwd", "../x", "a/../../x", "", "."] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }
}
