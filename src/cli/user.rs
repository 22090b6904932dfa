//! `tally user add|list|remove`: who may sign in to the review page (`tally serve`). A password
//! is read from a prompt on a terminal, else from the first line of standard input — never from
//! an argument, where it would be seen in the process list and the shell's history — and only
//! its argon2id hash is stored.

use super::{Load, exit, init_tracing};
use crate::pipeline::UsageError;
use crate::store::{Role, Store};
use std::io::{BufRead, IsTerminal};

#[derive(Debug, clap::Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Adds a user; the password comes from a prompt, or the first line of standard input.
    Add(AddArgs),
    /// Lists the users and their roles (never a password).
    List,
    /// Removes a user and ends its sessions.
    Remove(RemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The user name people sign in with.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// `viewer` reads; `approver` also approves and pushes.
    #[arg(long, value_enum)]
    pub role: RoleArg,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    Viewer,
    Approver,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Approver => Role::Approver,
        }
    }
}

/// The shortest password accepted.
const MIN_PASSWORD_CHARS: usize = 8;

/// `tally user ...`.
pub async fn execute(args: UserArgs, load: Load<'_>) -> anyhow::Result<i32> {
    let settings = load()?;
    init_tracing(&settings, Some("warn"));
    match args.command {
        UserCommand::Add(add) => {
            let name = add.name.trim().to_owned();
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(UsageError(
                    "the user name is empty or holds control characters".into(),
                )
                .into());
            }
            let password = read_password(&name)?;
            let hash = crate::web::hash_password(&password)?;
            let store = Store::connect(&settings.database_target()).await?;
            store
                .add_user(&name, add.role.into(), &hash)
                .await
                .map_err(|e| UsageError(format!("{e:#}")))?;
            println!("added {name} as {}", Role::from(add.role).as_str());
        }
        UserCommand::List => {
            let store = Store::connect(&settings.database_target()).await?;
            let users = store.users().await?;
            if users.is_empty() {
                println!("no users: add one with `tally user add NAME --role viewer|approver`");
            }
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|u| {
                    vec![
                        u.name.clone(),
                        u.role.as_str().to_owned(),
                        u.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                print!(
                    "{}",
                    super::render::table(&["name", "role", "added"], &rows)
                );
            }
        }
        UserCommand::Remove(remove) => {
            let store = Store::connect(&settings.database_target()).await?;
            if !store.remove_user(remove.name.trim()).await? {
                return Err(UsageError(format!(
                    "there is no user {:?}: `tally user list` lists them",
                    remove.name
                ))
                .into());
            }
            println!("removed {} and ended its sessions", remove.name.trim());
        }
    }
    Ok(exit::OK)
}

/// The password: asked twice on a terminal, else the first line of standard input.
fn read_password(name: &str) -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {name}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            return Err(UsageError("the two passwords differ; nothing was added".into()).into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        return Err(UsageError(
            "no password given: type it at the prompt, or pipe it as the first line of standard input (never as an argument); nothing was added"
                .into(),
        )
        .into());
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UsageError(format!(
            "the password is shorter than {MIN_PASSWORD_CHARS} characters; nothing was added"
        ))
        .into());
    }
    Ok(password)
}
