//! Secrets from the command line: project variables, contexts and their restrictions, checkout
//! keys, SSH keys, known hosts and checkout tokens.
//!
//! A secret value is read from stdin, never from an argument: arguments land in shell history
//! and in `/proc/PID/cmdline`, which every local user can read.

use std::io::{IsTerminal as _, Read as _};

use bosun_api::types::{
    Context, ContextOwner, CreateContext, CreateEnvVar, CreateRestriction, CreateSshKey, KnownHosts,
};
use clap::Subcommand;

use crate::Failure;
use crate::commands::Ctx;

/// Largest value read from stdin (the server keeps at most 128 KiB).
const MAX_STDIN: u64 = 128 << 10;

#[derive(Subcommand, Debug)]
pub enum ProjectEnvCommand {
    /// Set NAME for the project; the value is read from stdin (one trailing newline dropped).
    Set { slug: String, name: String },
    /// List the project's variables, values masked (`xxxx` and the last four characters).
    List { slug: String },
    /// Remove NAME from the project.
    Unset { slug: String, name: String },
}

#[derive(Subcommand, Debug)]
pub enum CheckoutKeyCommand {
    /// Generate a deploy key; prints its public key, to add to the repository's host.
    Create { slug: String },
    /// List the project's checkout keys: fingerprint, type, preferred, public key.
    List { slug: String },
    /// Delete the checkout key with FINGERPRINT.
    Delete { slug: String, fingerprint: String },
}

#[derive(Subcommand, Debug)]
pub enum SshKeyCommand {
    /// Add an OpenSSH private key, read from stdin, for `add_ssh_keys`.
    Add {
        slug: String,
        /// The host the key is for (default: every host).
        #[arg(long)]
        hostname: Option<String>,
    },
    /// List the project's SSH keys: fingerprints and hosts.
    List { slug: String },
    /// Delete the SSH key with FINGERPRINT (SHA256:... or MD5 form).
    Delete { slug: String, fingerprint: String },
}

#[derive(Subcommand, Debug)]
pub enum KnownHostsCommand {
    /// Print the host keys the project's checkouts enforce (known_hosts lines).
    Show { slug: String },
    /// Replace them with known_hosts lines read from stdin (empty: trust on first use again).
    Set { slug: String },
}

#[derive(Subcommand, Debug)]
pub enum CheckoutTokenCommand {
    /// Set the token for an https:// repository, read from stdin.
    Set { slug: String },
    /// Remove it.
    Unset { slug: String },
}

/// `--org`: the organization (namespace) a context belongs to; by default the only one the
/// server has.
#[derive(clap::Args, Debug)]
pub struct OrgArg {
    #[arg(long, env = "BOSUN_ORG")]
    pub org: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ContextCommand {
    /// Create a context.
    Create {
        name: String,
        #[command(flatten)]
        org: OrgArg,
    },
    /// List the organization's contexts.
    List {
        #[command(flatten)]
        org: OrgArg,
    },
    /// Delete a context with its variables and restrictions.
    Delete {
        name: String,
        #[command(flatten)]
        org: OrgArg,
    },
    /// A context's variables (values from stdin).
    #[command(subcommand)]
    Env(ContextEnvCommand),
    /// Restrict a context to a project, or to pipelines for which an expression holds
    /// (`pipeline.git.branch == "main"`).
    Restrict {
        name: String,
        #[arg(
            long,
            conflicts_with = "expression",
            required_unless_present = "expression"
        )]
        project: Option<String>,
        #[arg(long)]
        expression: Option<String>,
        #[command(flatten)]
        org: OrgArg,
    },
    /// List a context's restrictions.
    Restrictions {
        name: String,
        #[command(flatten)]
        org: OrgArg,
    },
    /// Remove a restriction by id.
    Unrestrict {
        name: String,
        id: String,
        #[command(flatten)]
        org: OrgArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum ContextEnvCommand {
    /// Set VAR in context NAME; the value is read from stdin (one trailing newline dropped).
    Set {
        name: String,
        var: String,
        #[command(flatten)]
        org: OrgArg,
    },
    /// List the context's variable names.
    List {
        name: String,
        #[command(flatten)]
        org: OrgArg,
    },
    /// Remove VAR from context NAME.
    Unset {
        name: String,
        var: String,
        #[command(flatten)]
        org: OrgArg,
    },
}

/// Reads a secret from stdin: all of it, one trailing newline dropped. On a terminal, says what
/// it waits for (the value is echoed by the terminal; pipe it in to avoid that).
fn read_stdin(what: &str) -> Result<String, Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("reading {what} from stdin (end with Ctrl-D):");
    }
    let mut bytes = Vec::new();
    stdin.lock().take(MAX_STDIN + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STDIN {
        return Err(Failure::input(format!(
            "{what} on stdin is longer than {MAX_STDIN} bytes"
        )));
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|_| Failure::input(format!("{what} on stdin is not UTF-8")))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

pub async fn project_env(ctx: &Ctx, command: ProjectEnvCommand) -> Result<u8, Failure> {
    match command {
        ProjectEnvCommand::Set { slug, name } => {
            let value = read_stdin(&format!("the value of {name}"))?;
            let request = CreateEnvVar { name, value };
            let var = ctx
                .client
                .set_project_env(&ctx.auth, &slug, &request)
                .await?;
            println!("set {} for {slug} ({})", var.name, var.value);
        }
        ProjectEnvCommand::List { slug } => {
            let page = ctx.client.project_env(&ctx.auth, &slug).await?;
            for var in page.items {
                println!("{}\t{}", var.name, var.value);
            }
        }
        ProjectEnvCommand::Unset { slug, name } => {
            ctx.client
                .delete_project_env(&ctx.auth, &slug, &name)
                .await?;
            println!("removed {name} from {slug}");
        }
    }
    Ok(0)
}

pub async fn checkout_key(ctx: &Ctx, command: CheckoutKeyCommand) -> Result<u8, Failure> {
    match command {
        CheckoutKeyCommand::Create { slug } => {
            let key = ctx.client.create_checkout_key(&ctx.auth, &slug).await?;
            eprintln!(
                "created deploy key {} for {slug}: add this public key to the repository \
                 (read-only access is enough)",
                key.fingerprint
            );
            println!("{}", key.public_key);
        }
        CheckoutKeyCommand::List { slug } => {
            let page = ctx.client.checkout_keys(&ctx.auth, &slug).await?;
            for key in page.items {
                let preferred = if key.preferred { "preferred" } else { "-" };
                println!(
                    "{}\t{}\t{preferred}\t{}",
                    key.fingerprint, key.key_type, key.public_key
                );
            }
        }
        CheckoutKeyCommand::Delete { slug, fingerprint } => {
            ctx.client
                .delete_checkout_key(&ctx.auth, &slug, &fingerprint)
                .await?;
            println!("deleted checkout key {fingerprint} of {slug}");
        }
    }
    Ok(0)
}

pub async fn ssh_key(ctx: &Ctx, command: SshKeyCommand) -> Result<u8, Failure> {
    match command {
        SshKeyCommand::Add { slug, hostname } => {
            let private_key = read_stdin("the private key")?;
            let request = CreateSshKey {
                hostname,
                private_key: format!("{private_key}\n"),
            };
            let key = ctx.client.add_ssh_key(&ctx.auth, &slug, &request).await?;
            println!(
                "added SSH key {} ({}) for {}",
                key.fingerprint,
                key.md5_fingerprint,
                key.hostname.as_deref().unwrap_or("every host")
            );
        }
        SshKeyCommand::List { slug } => {
            let page = ctx.client.ssh_keys(&ctx.auth, &slug).await?;
            for key in page.items {
                println!(
                    "{}\t{}\t{}",
                    key.fingerprint,
                    key.md5_fingerprint,
                    key.hostname.as_deref().unwrap_or("*")
                );
            }
        }
        SshKeyCommand::Delete { slug, fingerprint } => {
            ctx.client
                .delete_ssh_key(&ctx.auth, &slug, &fingerprint)
                .await?;
            println!("deleted SSH key {fingerprint} of {slug}");
        }
    }
    Ok(0)
}

pub async fn known_hosts(ctx: &Ctx, command: KnownHostsCommand) -> Result<u8, Failure> {
    match command {
        KnownHostsCommand::Show { slug } => {
            let hosts = ctx.client.known_hosts(&ctx.auth, &slug).await?;
            if hosts.known_hosts.is_empty() {
                eprintln!(
                    "{slug} has no known hosts yet: its first fetch will trust and keep the host's key"
                );
            }
            for line in hosts.known_hosts {
                println!("{line}");
            }
        }
        KnownHostsCommand::Set { slug } => {
            let text = read_stdin("known_hosts lines")?;
            let request = KnownHosts {
                known_hosts: text.lines().map(str::to_owned).collect(),
            };
            let hosts = ctx
                .client
                .set_known_hosts(&ctx.auth, &slug, &request)
                .await?;
            println!("{slug} now trusts {} host key(s)", hosts.known_hosts.len());
        }
    }
    Ok(0)
}

pub async fn checkout_token(ctx: &Ctx, command: CheckoutTokenCommand) -> Result<u8, Failure> {
    let (slug, token) = match command {
        CheckoutTokenCommand::Set { slug } => {
            let token = read_stdin("the checkout token")?;
            (slug, Some(token))
        }
        CheckoutTokenCommand::Unset { slug } => (slug, None),
    };
    let answer = ctx
        .client
        .set_checkout_token(&ctx.auth, &slug, token.as_deref())
        .await?;
    println!("{slug}: {}", answer.message);
    Ok(0)
}

/// The organization to use: `--org`, else the only one the server knows.
async fn org_of(ctx: &Ctx, org: &OrgArg) -> Result<String, Failure> {
    if let Some(org) = &org.org {
        return Ok(org.clone());
    }
    let orgs = ctx.client.collaborations(&ctx.auth).await?;
    match orgs.as_slice() {
        [one] => Ok(one.slug.clone()),
        [] => Err(Failure::input(
            "the server has no organization yet (create a project or a resource class first), \
             or pass --org",
        )),
        many => Err(Failure::input(format!(
            "the server has several organizations ({}): pass --org",
            many.iter()
                .map(|o| o.slug.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn find_context(ctx: &Ctx, org: &str, name: &str) -> Result<Context, Failure> {
    let page = ctx.client.contexts(&ctx.auth, org).await?;
    page.items
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| Failure::input(format!("organization `{org}` has no context `{name}`")))
}

pub async fn context(ctx: &Ctx, command: ContextCommand) -> Result<u8, Failure> {
    match command {
        ContextCommand::Create { name, org } => {
            let org = org_of(ctx, &org).await?;
            let request = CreateContext {
                name,
                owner: ContextOwner {
                    id: None,
                    slug: Some(org.clone()),
                    owner_type: Some("organization".into()),
                },
            };
            let context = ctx.client.create_context(&ctx.auth, &request).await?;
            println!("created context {} ({}) in {org}", context.name, context.id);
        }
        ContextCommand::List { org } => {
            let org = org_of(ctx, &org).await?;
            let page = ctx.client.contexts(&ctx.auth, &org).await?;
            for context in page.items {
                println!("{}\t{}\t{}", context.name, context.id, context.created_at);
            }
        }
        ContextCommand::Delete { name, org } => {
            let org = org_of(ctx, &org).await?;
            let context = find_context(ctx, &org, &name).await?;
            ctx.client.delete_context(&ctx.auth, &context.id).await?;
            println!("deleted context {name}");
        }
        ContextCommand::Env(ContextEnvCommand::Set { name, var, org }) => {
            let org = org_of(ctx, &org).await?;
            let context = find_context(ctx, &org, &name).await?;
            let value = read_stdin(&format!("the value of {var}"))?;
            ctx.client
                .set_context_env(&ctx.auth, &context.id, &var, &value)
                .await?;
            println!("set {var} in context {name}");
        }
        ContextCommand::Env(ContextEnvCommand::List { name, org }) => {
            let org = org_of(ctx, &org).await?;
            let context = find_context(ctx, &org, &name).await?;
            let page = ctx.client.context_env(&ctx.auth, &context.id).await?;
            for var in page.items {
                println!("{}\t{}", var.variable, var.updated_at);
            }
        }
        ContextCommand::Env(ContextEnvCommand::Unset { name, var, org }) => {
            let org = org_of(ctx, &org).await?;
            let context = find_context(ctx, &org, &name).await?;
            ctx.client
                .delete_context_env(&ctx.auth, &context.id, &var)
                .await?;
            println!("removed {var} from context {name}");
        }
        ContextCommand::Restrict {
            name,
            project,
            expression,
            org,
        } => {
            let org = org_of(ctx, &org).await?;
            let context = find_context(ctx, &org, &name).await?;
            let request = match (project, expression) {
                (Some(slug), _) => {
                    let project = ctx.client.project(&ctx.auth, &slug).await?;
                    CreateRestriction {
                        project_id: None,
                        restriction_type: Some("project".into()),
                        restriction_value: Some(project.id),
                    }
                }
                (None, Some(expression)) => CreateRestriction {
                    project_id: None,
                    restriction_type: Some("expression".into()),
                    restriction_value: Some(expression),
                },
                (None, None) => {
                    return Err(Failure::input("give --project SLUG or --expression EXPR"));
                }
            };
            let restriction = ctx
                .client
                .add_context_restriction(&ctx.auth, &context.id, &request)
                .await?;
            println!(
                "restricted context {name}: {} {} ({})",
                restriction.restriction_type, restriction.name, restriction.id
            );
        }
        ContextCommand::Restrictions { name, org } => {
            let org = org_of(ctx, &org).await?;
            let context = find_context(ctx, &org, &name).await?;
            let page = ctx
                .client
                .context_restrictions(&ctx.auth, &context.id)
                .await?;
            for r in page.items {
                println!("{}\t{}\t{}", r.id, r.restriction_type, r.name);
            }
        }
        ContextCommand::Unrestrict { name, id, org } => {
            let org = org_of(ctx, &org).await?;
            let context = find_context(ctx, &org, &name).await?;
            ctx.client
                .delete_context_restriction(&ctx.auth, &context.id, &id)
                .await?;
            println!("removed restriction {id} from context {name}");
        }
    }
    Ok(0)
}
