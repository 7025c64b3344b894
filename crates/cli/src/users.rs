//! `bosun user …` (admin: users, roles, project grants) and `bosun token …` (personal API
//! tokens: anyone's own, an admin's for anyone).

use bosun_api::types::{CreateUser, CreateUserToken, UserDetail, UserToken};
use clap::Subcommand;

use crate::Failure;
use crate::commands::Ctx;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create user NAME (a login: a-z, 0-9, `.`, `_`, `-`) with a role.
    Create {
        name: String,
        /// `admin`, `member` or `viewer`.
        #[arg(long)]
        role: String,
        /// The name shown for the user (default: NAME).
        #[arg(long = "display-name")]
        display_name: Option<String>,
    },
    /// List users: login, role, the projects a member was given.
    List,
    /// Give member NAME project SLUG (vcs/org/repo).
    Grant { name: String, slug: String },
    /// Take project SLUG from member NAME.
    Ungrant { name: String, slug: String },
    /// Change NAME's role.
    #[command(name = "set-role")]
    SetRole { name: String, role: String },
    /// Delete NAME with their tokens and grants.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
pub enum UserTokenCommand {
    /// Create a personal API token (printed once), for yourself or, as an admin, for --user.
    Create {
        #[arg(long)]
        user: Option<String>,
        /// What the token is for, shown by `token list`.
        #[arg(long, default_value = "")]
        label: String,
        /// Lifetime, as `30d`, `12h`, `1h30m` (default: no expiry).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens (never their secrets): yours, --user's or --all (admins).
    List {
        #[arg(long, conflicts_with = "all")]
        user: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Revoke token ID at once.
    Revoke { id: String },
}

pub async fn user(ctx: &Ctx, command: UserCommand) -> Result<u8, Failure> {
    let print = |user: &UserDetail| println!("{}", user_line(user));
    match command {
        UserCommand::Create {
            name,
            role,
            display_name,
        } => {
            let request = CreateUser {
                login: name,
                name: display_name,
                role,
            };
            let user = ctx.client.create_user(&ctx.auth, &request).await?;
            println!(
                "created user {} ({}) with id {}",
                user.login, user.role, user.id
            );
        }
        UserCommand::List => {
            for user in ctx.client.users(&ctx.auth).await?.items {
                print(&user);
            }
        }
        UserCommand::Grant { name, slug } => {
            print(&ctx.client.grant_project(&ctx.auth, &name, &slug).await?);
        }
        UserCommand::Ungrant { name, slug } => {
            print(&ctx.client.ungrant_project(&ctx.auth, &name, &slug).await?);
        }
        UserCommand::SetRole { name, role } => {
            print(&ctx.client.set_user_role(&ctx.auth, &name, &role).await?);
        }
        UserCommand::Delete { name } => {
            ctx.client.delete_user(&ctx.auth, &name).await?;
            println!("deleted user {name}");
        }
    }
    Ok(0)
}

fn user_line(user: &UserDetail) -> String {
    let mut line = format!("{:<20} {:<7} {}", user.login, user.role, user.id);
    if !user.projects.is_empty() {
        line.push_str("  projects: ");
        line.push_str(&user.projects.join(", "));
    }
    line
}

/// Seconds in a lifetime written as CircleCI and people write durations (`30d`, `1h30m`).
fn lifetime(text: &str) -> Result<u64, Failure> {
    let duration = humantime::parse_duration(text).map_err(|err| {
        Failure::input(format!(
            "--expires `{text}` is not a duration like 30d or 12h: {err}"
        ))
    })?;
    match duration.as_secs() {
        0 => Err(Failure::input("--expires must be at least one second")),
        secs => Ok(secs),
    }
}

pub async fn token(ctx: &Ctx, command: UserTokenCommand) -> Result<u8, Failure> {
    match command {
        UserTokenCommand::Create {
            user,
            label,
            expires,
        } => {
            let request = CreateUserToken {
                user,
                label,
                expires_in_seconds: expires.as_deref().map(lifetime).transpose()?,
            };
            let created = ctx.client.create_user_token(&ctx.auth, &request).await?;
            println!("id:      {}", created.info.id);
            println!("user:    {}", created.info.user);
            println!(
                "expires: {}",
                created.info.expires_at.as_deref().unwrap_or("never")
            );
            println!("token:   {}", created.token);
            eprintln!("the token is shown only once: store it now");
        }
        UserTokenCommand::List { user, all } => {
            let tokens = ctx
                .client
                .user_tokens(&ctx.auth, user.as_deref(), all)
                .await?;
            for token in tokens.items {
                println!("{}", token_line(&token));
            }
        }
        UserTokenCommand::Revoke { id } => {
            ctx.client.revoke_user_token(&ctx.auth, &id).await?;
            println!("revoked token {id}");
        }
    }
    Ok(0)
}

fn token_line(token: &UserToken) -> String {
    format!(
        "{}  {:<20} expires {:<24} last used {:<24} {}",
        token.id,
        token.user,
        token.expires_at.as_deref().unwrap_or("never"),
        token.last_used_at.as_deref().unwrap_or("never"),
        token.label
    )
}

#[cfg(test)]
mod tests {
    use super::lifetime;

    #[test]
    fn lifetimes_read_as_people_write_them() {
        assert_eq!(lifetime("30d").unwrap(), 30 * 86400);
        assert_eq!(lifetime("1h30m").unwrap(), 5400);
        assert!(lifetime("0s").is_err());
        assert!(lifetime("soon").is_err());
    }
}
