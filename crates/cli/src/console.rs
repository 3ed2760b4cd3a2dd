//! `ledgervault console`: the console's users, and serving it in the
//! foreground. The daemon starts it through [`start`] as well.

use anyhow::{anyhow, Result};
use ledgervault_console::users::{Role, Users};
use ledgervault_console::{Console, ConsoleOptions, Tls};
use ledgervault_service::config::Config;
use serde_json::json;

use crate::args::{ConsoleCommand, ConsoleUserCommand};
use crate::commands::{read_secret, usage, Globals};
use crate::ops::{location, required_config, status_location};
use crate::ui::exit;

/// Where the console listens when neither `--listen` nor the config says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8440";

pub fn run(g: &Globals, command: ConsoleCommand) -> Result<i32> {
    let cfg = required_config(g, "console")?;
    match command {
        ConsoleCommand::Serve {
            listen,
            self_signed,
        } => {
            let c = start(g, &cfg, listen.as_deref(), self_signed)?;
            if g.json {
                g.print_json(&json!({
                    "listening": c.addr().to_string(),
                    "url": c.url(),
                    "certificate_sha256": c.fingerprint(),
                }));
            } else if !g.quiet {
                println!("console on {} (stop with Ctrl-C)", c.url());
                if let Some(f) = c.fingerprint() {
                    println!("certificate fingerprint (SHA-256): {f}");
                }
            }
            c.wait();
            Ok(exit::OK)
        }
        ConsoleCommand::User { command } => user(g, &cfg, command),
    }
}

fn users_path(cfg: &Config) -> Result<std::path::PathBuf> {
    cfg.console_users_path()
        .ok_or_else(|| usage("no place for the console's users: set [console] users"))
}

fn user(g: &Globals, cfg: &Config, command: ConsoleUserCommand) -> Result<i32> {
    let path = users_path(cfg)?;
    let mut users = Users::load(&path)?;
    match command {
        ConsoleUserCommand::Add { name, role } => {
            let role = Role::parse(&role).map_err(|e| usage(e.to_string()))?;
            let password = ledgervault_service::repo::Secret::new(read_secret(
                None,
                "LEDGERVAULT_CONSOLE_PASSWORD",
                &format!("console password for {name}"),
                true,
            )?);
            users
                .set(&name, role, password.expose())
                .map_err(|e| usage(e.to_string()))?;
            users.save()?;
            if g.json {
                g.print_json(&json!({"user": name, "role": role.name()}));
            } else if !g.quiet {
                println!(
                    "console user {name} ({}) saved in {}",
                    role.name(),
                    path.display()
                );
            }
        }
        ConsoleUserCommand::Remove { name } => {
            users.remove(&name).map_err(|e| usage(e.to_string()))?;
            users.save()?;
            if !g.quiet && !g.json {
                println!("console user {name} removed");
            }
        }
        ConsoleUserCommand::List => {
            let list = users.list();
            if g.json {
                let v: Vec<_> = list
                    .iter()
                    .map(|(n, r)| json!({"user": n, "role": r.name()}))
                    .collect();
                g.print_json(&json!(v));
            } else if list.is_empty() {
                println!("no console users yet: add an admin with `ledgervault console user add NAME --role admin`");
            } else {
                for (n, r) in list {
                    println!("{n}\t{}", r.name());
                }
            }
        }
    }
    Ok(exit::OK)
}

/// Starts the console for `cfg` (on `listen`, else `[console] listen`).
pub fn start(
    g: &Globals,
    cfg: &Config,
    listen: Option<&str>,
    self_signed: bool,
) -> Result<Console> {
    let listen = listen
        .or(cfg.console.listen.as_deref())
        .unwrap_or(DEFAULT_LISTEN);
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        usage(format!(
            "{listen:?} is not an address and port, like 127.0.0.1:8440"
        ))
    })?;
    let self_signed = self_signed || cfg.console.tls_self_signed;
    let tls = match (&cfg.console.tls_cert, &cfg.console.tls_key) {
        (Some(_), Some(_)) if self_signed => {
            return Err(usage(
                "[console] gives tls_cert and tls_key and asks for a self-signed certificate: choose one",
            ))
        }
        (Some(c), Some(k)) => Some(Tls::Files {
            cert: c.clone(),
            key: k.clone(),
        }),
        (None, None) if self_signed => {
            let (cert, key) = cfg
                .console_self_signed_paths()
                .ok_or_else(|| usage("no place for the console's certificate"))?;
            Some(Tls::SelfSigned { cert, key })
        }
        (None, None) => None,
        _ => return Err(usage("[console] needs both tls_cert and tls_key, or neither")),
    };
    ledgervault_console::check_listen(&addr, tls.is_some()).map_err(|e| usage(e.to_string()))?;
    let mut copies = Vec::new();
    for c in &cfg.copy {
        copies.push(status_location(
            &c.name,
            location(g, cfg, Some(&c.name), None),
        ));
    }
    let primary = (cfg.repository.is_some() || g.repo.is_some())
        .then(|| status_location("primary", g.clone()));
    let opts = ConsoleOptions {
        listen: addr,
        tls,
        config: std::sync::Arc::new(Config::load(g.config.as_deref())?),
        users: users_path(cfg)?,
        audit: cfg.console_audit_path(),
        primary,
        copies,
        restore_to: cfg.console.restore_to.clone(),
    };
    ledgervault_console::start(opts).map_err(|e| anyhow!("{e:#}"))
}
