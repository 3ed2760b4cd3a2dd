//! `client list | backup | restore`: one client's books.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use ledgervault_repo::{BackupOptions, BackupSource};
use ledgervault_tenant::sql::{Db, Value};
use ledgervault_tenant::{export, find_client, list_clients, Mode, TenantConfig, TenantMap};
use serde_json::json;

use crate::args::ClientCommand;
use crate::commands::Globals;
use crate::ui::{self, exit};

/// Tag of client archive snapshots.
pub const ARCHIVE_TAG: &str = ledgervault_service::drill::CLIENT_ARCHIVE_TAG;

pub fn run(g: &Globals, cmd: ClientCommand) -> Result<i32> {
    let config = g.config()?.client;
    match cmd {
        ClientCommand::List { db, check } => list(g, &db, check, &config),
        ClientCommand::Backup { db, client, tags } => backup(g, &db, &client, tags, &config),
        ClientCommand::Restore {
            snapshot,
            client,
            into,
            as_new,
            replace,
            replace_other,
            set,
            dry_run,
            database,
        } => {
            let replace_other = replace_other.map(|k| match k.parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Text(k),
            });
            let mode = if replace {
                Mode::Replace
            } else if as_new {
                Mode::AsNew
            } else {
                Mode::New
            };
            let set = set
                .iter()
                .map(|s| {
                    let (c, v) = s
                        .split_once('=')
                        .ok_or_else(|| anyhow!("--set {s:?}: write COLUMN=VALUE"))?;
                    let v = match v.parse::<i64>() {
                        Ok(i) => Value::Int(i),
                        Err(_) => Value::Text(v.to_string()),
                    };
                    Ok((c.to_string(), v))
                })
                .collect::<Result<Vec<_>>>()?;
            restore(
                g,
                &snapshot,
                &client,
                &into,
                mode,
                set,
                replace_other,
                dry_run,
                database.as_deref(),
                &config,
            )
        }
    }
}

/// Opens a firm database of any kind; returns it with its engine name and
/// how snapshots name it (never with a password).
fn open_db(path: &Path, write: bool) -> Result<(Box<dyn Db>, &'static str, String)> {
    let spec = path.to_string_lossy();
    let kind = ledgervault_service::db::of_target(&spec)?;
    let (db, origin) = kind.open_sql(&spec, write)?;
    Ok((db, kind.engine(), origin))
}

fn open_map(db: &dyn Db, config: &TenantConfig, path: &Path) -> Result<TenantMap> {
    ledgervault_service::client::open_map(db, config, &path.to_string_lossy())
}

fn list(g: &Globals, path: &Path, check: bool, config: &TenantConfig) -> Result<i32> {
    let (db, _, _) = open_db(path, false)?;
    let map = open_map(db.as_ref(), config, path)?;
    // With --check, one read snapshot for everything below, so that on a
    // firm in use the listing, the partition and the exports it is checked
    // against count the same rows. (A SQLite database in rollback-journal
    // mode cannot commit while it runs; in WAL mode, writers go on.)
    if check {
        db.begin_read()?;
    }
    let clients = list_clients(db.as_ref(), &map)?;
    // The whole partition only when asked: it reads every table again.
    let parts = if check {
        ledgervault_tenant::partition(db.as_ref(), &map)?
    } else {
        Vec::new()
    };
    let unowned: Vec<(String, u64)> = if check {
        parts
            .iter()
            .filter(|p| p.unowned > 0)
            .map(|p| (p.table.clone(), p.unowned))
            .collect()
    } else {
        ledgervault_tenant::unowned_rows(db.as_ref(), &map)?
    };
    let mut broken: Vec<String> = parts
        .iter()
        .filter(|p| !p.adds_up())
        .map(|p| p.table.clone())
        .collect();
    if check {
        // The listing agrees with the partition, which walks every route:
        // where no row is shared by clients, each client's rows are its
        // exclusive ones.
        for p in parts
            .iter()
            .filter(|p| p.kind == "owned" && p.cross_client == 0)
        {
            if p.table == map.root().name {
                continue;
            }
            for c in &clients {
                let listed = c.rows.get(&p.table).copied().unwrap_or(0);
                let walked = p.exclusive.get(&c.key.plain()).copied().unwrap_or(0);
                if listed != walked {
                    broken.push(format!(
                        "{} (client {}: listing {listed}, partition {walked})",
                        p.table, c.key
                    ));
                }
            }
        }
        // And each client's rows as export reads them agree with the
        // listing, table by table.
        for c in &clients {
            let got = ledgervault_tenant::client_row_counts(db.as_ref(), &map, &c.key)?;
            for (t, n) in &got {
                let listed = if *t == map.root().name {
                    1
                } else {
                    c.rows.get(t).copied().unwrap_or(0)
                };
                if *n != listed {
                    broken.push(format!(
                        "{t} (client {}: export {n}, listing {listed})",
                        c.key
                    ));
                }
            }
        }
    }
    if check {
        let _ = db.rollback();
    }
    if g.json {
        g.print_json(&json!({
            "root": map.root().name,
            "owned_tables": map.owned.iter().map(|o| &o.name).collect::<Vec<_>>(),
            "shared_tables": map.shared.iter().map(|s| json!({"table": s.name, "natural_key": s.natural_key})).collect::<Vec<_>>(),
            "clients": clients,
            "unowned_rows": unowned.iter().map(|(t, n)| json!({"table": t, "rows": n})).collect::<Vec<_>>(),
            "unfollowed_keys": map.unfollowed,
            "partition": if check { json!(parts) } else { json!(null) },
            "adds_up": if check { json!(broken.is_empty()) } else { json!(null) },
        }));
    } else {
        if check {
            let w = parts
                .iter()
                .map(|p| p.table.len())
                .max()
                .unwrap_or(0)
                .max(5);
            println!(
                "{:<w$} {:>6} {:>10} {:>9} {:>8} {:>8}",
                "Table", "Kind", "Rows", "Clients'", "Cross", "Nobody"
            );
            for p in &parts {
                let own: u64 = p.exclusive.values().sum();
                println!(
                    "{:<w$} {:>6} {:>10} {:>9} {:>8} {:>8}{}",
                    p.table,
                    p.kind,
                    p.total,
                    own,
                    p.cross_client,
                    p.unowned,
                    if p.adds_up() { "" } else { "  DOES NOT ADD UP" }
                );
            }
        }
        let w = clients
            .iter()
            .map(|c| c.key.to_string().len())
            .max()
            .unwrap_or(0)
            .max(3);
        println!("{:>w$}  {:>10}  Client", "Key", "Rows");
        for c in &clients {
            println!(
                "{:>w$}  {:>10}  {}",
                c.key.to_string(),
                c.total_rows,
                c.label
            );
        }
        let shared = if map.shared.is_empty() {
            "no shared tables".to_string()
        } else {
            let names: Vec<&str> = map.shared.iter().map(|s| s.name.as_str()).collect();
            format!("shared: {}", names.join(", "))
        };
        println!(
            "{} clients in {}; their rows are in {} tables; {shared}",
            clients.len(),
            map.root().name,
            map.owned.len(),
        );
        for (t, n) in &unowned {
            println!(
                "{t}: {n} row(s) belong to no client (no key on any route leads to one); they are in no client's archive"
            );
        }
        for u in &map.unfollowed {
            println!("note: {u}");
        }
        if check && broken.is_empty() {
            println!("check: every row of every table is accounted for exactly once");
        }
    }
    if !broken.is_empty() {
        bail!(
            "the rows of {} do not add up to their clients', cross-client, and unowned rows",
            broken.join(", ")
        );
    }
    Ok(exit::OK)
}

fn backup(
    g: &Globals,
    path: &Path,
    spec: &str,
    mut tags: Vec<String>,
    config: &TenantConfig,
) -> Result<i32> {
    let repo = g.open()?;
    let started = std::time::Instant::now();
    let (db, engine_name, origin) = open_db(path, false)?;
    let map = open_map(db.as_ref(), config, path)?;
    let (key, label) = find_client(db.as_ref(), &map, spec)?;
    let archive = export(db.as_ref(), &map, &key, engine_name)?;
    // Rows that belong to no client are in no archive: said, not silent.
    let unowned = ledgervault_tenant::unowned_rows(db.as_ref(), &map)?;
    drop(db);
    if !g.quiet {
        for u in &map.unfollowed {
            eprintln!("ledgervault: note: {u}");
        }
        for (t, n) in &unowned {
            eprintln!(
                "ledgervault: note: {t}: {n} row(s) belong to no client and are in no client's archive (`client list --check` shows every table)"
            );
        }
    }
    let export_secs = started.elapsed().as_secs_f64();
    let bytes = archive.encode();
    tags.extend([
        ARCHIVE_TAG.to_string(),
        format!("client:{}", key.plain()),
        format!("client-name:{label}"),
    ]);
    let opts = BackupOptions {
        tags,
        reason: None,
        ..Default::default()
    };
    let source = BackupSource::Stream {
        name: format!("client-{}.json", key.plain()),
        reader: Box::new(std::io::Cursor::new(bytes)),
        origin: Some(format!("client {} of {origin}", key.plain())),
    };
    let quiet = Globals {
        quiet: true,
        json: false,
        ..g.clone()
    };
    let (s, code) = crate::commands::run_backup(&quiet, &repo, vec![source], opts)?;
    if g.json {
        g.print_json(&json!({
            "snapshot_id": s.snapshot_id, "client": key, "label": label,
            "rows": archive.rows(), "tables": archive.tables.len(),
            "links": archive.links, "export_secs": export_secs,
            "unowned_rows": unowned.iter().map(|(t, n)| json!({"table": t, "rows": n})).collect::<Vec<_>>(),
        }));
    } else if !g.quiet {
        println!(
            "client {} ({label}) backed up as snapshot {}: {} rows in {} tables, {} shared row(s), {} cross-client link(s); export took {}",
            key,
            s.snapshot_id.short(),
            archive.rows(),
            archive.tables.len(),
            archive.shared.iter().map(|t| t.rows.len()).sum::<usize>(),
            archive.links.len(),
            ui::secs(export_secs)
        );
        for l in &archive.links {
            println!("  cross-client link: {l}");
        }
    }
    Ok(code)
}

#[allow(clippy::too_many_arguments)]
fn restore(
    g: &Globals,
    spec: &str,
    client: &str,
    into: &Path,
    mode: Mode,
    set: Vec<(String, Value)>,
    replace_other: Option<Value>,
    dry_run: bool,
    database: Option<&str>,
    config: &TenantConfig,
) -> Result<i32> {
    let repo = g.open()?;
    let req = ledgervault_service::client::ClientRestore {
        snapshot: spec.to_string(),
        client: client.to_string(),
        into: into.to_string_lossy().into_owned(),
        mode,
        set,
        replace_other,
        dry_run,
        database: database.map(str::to_string),
    };
    let chatty = !g.quiet && !g.json;
    let note = |m: String| {
        if m.starts_with("cannot write a lock file") {
            if !g.quiet {
                eprintln!("ledgervault: warning: {m}");
            }
        } else if chatty {
            println!("{m}");
        }
    };
    let mut take_safety = |sources, reason, _path: &Path| {
        crate::commands::safety_snapshot(
            g,
            &repo,
            sources,
            crate::commands::PRE_CLIENT_RESTORE_TAG,
            reason,
            &crate::redact::url(&req.into),
        )
    };
    // Its steps are lines (`note`), with no bar between them.
    let done = ledgervault_service::client::restore_client(
        &repo,
        &req,
        config,
        &note,
        &mut take_safety,
        &ledgervault_repo::NoProgress,
    )?;
    let (from, safety, secs, r) = (
        done.from_snapshot,
        done.safety_snapshot,
        done.import_secs,
        &done.report,
    );
    if g.json {
        g.print_json(&serde_json::to_value(&done)?);
        return Ok(exit::OK);
    }
    if g.quiet {
        return Ok(exit::OK);
    }
    println!(
        "{} client {} ({}) from snapshot {} into {} as client {} ({:?}):",
        if r.dry_run {
            "plan: restore"
        } else {
            "restored"
        },
        r.client_from,
        r.label,
        from.short(),
        crate::redact::url(&into.to_string_lossy()),
        r.client_to,
        r.mode
    );
    if let Some(old) = &r.replaced {
        let per: Vec<String> = old.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
        println!(
            "  {} client {} ({}), found by {}: {} rows ({})",
            if r.dry_run { "would delete" } else { "deleted" },
            old.key,
            old.label,
            old.found_by,
            r.replaced_rows,
            per.join(", ")
        );
    }
    let w = r
        .tables
        .iter()
        .map(|t| t.table.len())
        .max()
        .unwrap_or(0)
        .max(24);
    for t in &r.tables {
        println!(
            "  {:<w$} {:>8} rows{}",
            t.table,
            t.rows,
            if t.remapped > 0 {
                format!(", {} keys remapped (taken in the target)", t.remapped)
            } else {
                String::new()
            },
        );
        if t.reused > 0 {
            println!(
                "  {:<w$} {:>8} of them already there, identical and used by nothing: kept as they are",
                "", t.reused
            );
        }
    }
    for s in &r.shared {
        println!(
            "  shared {:<17} {} matched{}, {} created",
            s.table,
            s.matched,
            s.natural_key
                .as_ref()
                .map(|k| format!(" by {}", k.join("+")))
                .unwrap_or_else(|| " by identical content".into()),
            s.created
        );
    }
    for l in &r.links {
        println!("  link {}: {:?}, {}", l.link, l.policy, l.action);
    }
    for c in &r.unique_conflicts {
        let shown = |v: &[ledgervault_tenant::sql::Value]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("+")
        };
        println!(
            "  unique {}.{} = {} (the target's row {} holds it): {:?} -> {}",
            c.table,
            c.columns.join("+"),
            shown(&c.value),
            shown(&c.existing),
            c.rule,
            c.resolved
                .as_deref()
                .map(shown)
                .unwrap_or_else(|| "unresolved".into())
        );
    }
    for v in &r.verified {
        println!("  verified: {v}");
    }
    let steps: Vec<String> = r
        .timings
        .iter()
        .map(|(s, t)| format!("{s} {t:.1} s"))
        .collect();
    println!("  time: {}", steps.join(", "));
    if r.dry_run {
        println!("dry run: nothing was changed ({})", ui::secs(secs));
    } else {
        println!(
            "committed in {}; safety snapshot {} holds the target as it was",
            ui::secs(secs),
            safety.map(|s| s.short()).unwrap_or_default()
        );
    }
    Ok(exit::OK)
}
