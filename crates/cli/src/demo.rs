//! The demo: sample firm data backed up, listed, restored and checked,
//! with each step shown as the command a person would type.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::args::{BackupArgs, CheckArgs, DemoArgs, InitArgs, KdfArgs, RestoreArgs, VerifyArgs};
use crate::commands::{self, Globals};
use crate::ui::exit;

/// A tiny deterministic generator, so the demo needs no data files.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CLIENTS: [&str; 5] = [
    "Alder Dental Practice",
    "Birchwood Bakery LLC",
    "Cedar Street Property Management",
    "Dogwood Landscaping",
    "Elm & Oak Legal Services",
];
const ACCOUNTS: [&str; 8] = [
    "1000 Cash",
    "1200 Accounts Receivable",
    "1500 Equipment",
    "2000 Accounts Payable",
    "2100 Payroll Liabilities",
    "4000 Revenue",
    "6100 Rent Expense",
    "6200 Wages Expense",
];

fn journal_lines(rng: &mut Lcg, first: u64, count: u64) -> String {
    let mut s = String::new();
    for je in first..first + count {
        let amount = rng.below(500_000) + 100;
        let (dr, cr) = (rng.below(8) as usize, rng.below(8) as usize);
        let date = format!("2026-{:02}-{:02}", rng.below(12) + 1, rng.below(28) + 1);
        s.push_str(&format!(
            "{date},JE-{je:06},{},{}.{:02},0.00,entry {je}\n",
            ACCOUNTS[dr],
            amount / 100,
            amount % 100
        ));
        s.push_str(&format!(
            "{date},JE-{je:06},{},0.00,{}.{:02},entry {je}\n",
            ACCOUNTS[cr],
            amount / 100,
            amount % 100
        ));
    }
    s
}

/// Writes the firm's documents folder: per client a general journal
/// spreadsheet, invoices and a scanned receipt (random bytes standing in for
/// a PDF).
fn write_documents(root: &Path) -> Result<(u64, u64)> {
    let mut rng = Lcg(2026);
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut put = |p: PathBuf, data: &[u8]| -> Result<()> {
        fs::create_dir_all(p.parent().unwrap())?;
        fs::write(&p, data).with_context(|| format!("cannot write {}", p.display()))?;
        files += 1;
        bytes += data.len() as u64;
        Ok(())
    };
    for (i, client) in CLIENTS.iter().enumerate() {
        let dir = root.join("clients").join(format!("{:03} {client}", i + 1));
        let mut journal = String::from("date,entry,account,debit,credit,memo\n");
        journal.push_str(&journal_lines(&mut rng, 1, 15_000));
        put(dir.join("general-journal-2026.csv"), journal.as_bytes())?;
        for inv in 0..40 {
            let text = format!(
                "INVOICE {}-{inv:04}\nBill to: {client}\nDate: 2026-{:02}-{:02}\n\nBookkeeping services   {} hours   {}.00\nPayroll processing                      {}.00\n\nTotal due within 30 days.\n",
                i + 1,
                rng.below(12) + 1,
                rng.below(28) + 1,
                rng.below(40) + 1,
                rng.below(4000) + 200,
                rng.below(900) + 100
            );
            put(
                dir.join("invoices").join(format!("invoice-{inv:04}.txt")),
                text.as_bytes(),
            )?;
        }
        let scan: Vec<u8> = (0..600_000).map(|_| rng.next() as u8).collect();
        put(dir.join("receipts").join("scanned-receipts-q4.pdf"), &scan)?;
    }
    put(
        root.join("firm-settings.ini"),
        b"[firm]\nname=Harbor & Pine Accounting\nfiscal_year_end=12-31\n",
    )?;
    Ok((files, bytes))
}

fn step(quiet: bool, text: &str) {
    if !quiet {
        println!("\n$ {text}");
    }
}

/// Marks a folder as made by the demo, so a later demo may replace it.
const MARKER: &str = ".ledgervault-demo";

fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if dir.join(MARKER).exists() {
            fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear the earlier demo in {}", dir.display()))?;
        } else if fs::read_dir(dir)?.next().is_some() {
            bail!("{} is not empty and was not made by the demo; give an empty or new folder with --dir", dir.display());
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::write(
        dir.join(MARKER),
        "made by `ledgervault demo`; the next demo replaces this folder\n",
    )?;
    Ok(())
}

fn table_stats(path: &Path) -> Result<Vec<(String, u64, String)>> {
    let conn = rusqlite_open(path)?;
    let mut info = ledgervault_repo::DatabaseInfo::default();
    ledgervault_sources::sqlite::table_stats(&conn, &mut info);
    if !info.problems.is_empty() {
        bail!("{}: {}", path.display(), info.problems.join("; "));
    }
    Ok(info
        .tables
        .into_iter()
        .map(|t| (t.name, t.rows, t.digest))
        .collect())
}

fn rusqlite_open(path: &Path) -> Result<ledgervault_sources::sqlite::Connection> {
    ledgervault_sources::sqlite::Connection::open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

pub fn run(a: DemoArgs, quiet: bool) -> Result<i32> {
    let dir = a.dir.clone();
    prepare_dir(&dir)?;
    let db = dir.join("firm.db");
    let docs = dir.join("documents");
    let repo = dir.join("repository");
    let restored = dir.join("restored");
    let pwfile = dir.join("password.txt");
    fs::write(&pwfile, "demo password, keep me secret\n")?;
    if !quiet {
        println!(
            "ledgervault demo: the sample firm Harbor & Pine Accounting, in {}",
            dir.display()
        );
    }
    let started = std::time::Instant::now();
    let firm = ledgervault_samplefirm::generate(
        &db,
        &ledgervault_samplefirm::FirmOptions {
            clients: a.clients,
            size: a.size,
            seed: a.seed,
        },
    )
    .with_context(|| format!("cannot make the sample firm at {}", db.display()))?;
    let secs = started.elapsed().as_secs_f64();
    let (files, bytes) = write_documents(&docs)?;
    if !quiet {
        println!(
            "  firm.db:    {} clients, {} journal entries, {} (made in {:.1} s, {:.0} MB/s)",
            firm.clients,
            firm.journal_entries,
            crate::ui::size(firm.bytes),
            secs,
            firm.bytes as f64 / 1e6 / secs.max(0.001)
        );
        println!("  documents/: {files} files, {}", crate::ui::size(bytes));
        println!("  password:   in {}", pwfile.display());
    }
    let g = Globals {
        repo: Some(repo.display().to_string()),
        password_file: Some(pwfile.clone()),
        storage: Default::default(),
        json: false,
        quiet,
        append_only: false,
        config: None,
        retry_lock: None,
    };
    step(quiet, "ledgervault init");
    commands::init(
        &g,
        InitArgs {
            same_keys_as: None,
            same_keys_password_file: None,
            pack_size_mib: 16,
            kdf: KdfArgs {
                argon2_memory_kib: 65536,
                argon2_iterations: 3,
            },
            immutable_days: None,
        },
    )?;

    let backup_args = |reason: Option<&str>| BackupArgs {
        paths: vec![db.clone(), docs.clone()],
        stdin_name: None,
        tags: vec!["nightly".into()],
        reason: reason.map(str::to_string),
        compression: 1,
        threads: None,
        no_db_detect: false,
        db_timeout: 30,
        globals: false,
        parent: None,
        force_reread: false,
        read_ahead: ledgervault_repo::READ_AHEAD as u32,
    };
    step(
        quiet,
        &format!(
            "ledgervault backup {} {} --tag nightly",
            db.display(),
            docs.display()
        ),
    );
    if commands::backup(&g, backup_args(None))? != exit::OK {
        bail!("the first backup did not complete");
    }

    let day = ledgervault_samplefirm::simulate_day(&db, a.seed.wrapping_add(1), 0.05)
        .context("cannot simulate a day of work")?;
    let journal = docs.join("clients/002 Birchwood Bakery LLC/general-journal-2026.csv");
    let mut text = fs::read_to_string(&journal)?;
    text.push_str(&journal_lines(&mut Lcg(7), 15_001, 200));
    fs::write(&journal, text)?;
    if !quiet {
        println!(
            "\n(a day of work: {} new transactions and {} scattered edits in firm.db, one spreadsheet updated)",
            day.new_entries, day.edited_rows
        );
    }
    step(
        quiet,
        &format!(
            "ledgervault backup {} {} --tag nightly --reason \"nightly after a day of work\"",
            db.display(),
            docs.display()
        ),
    );
    if commands::backup(&g, backup_args(Some("nightly after a day of work")))? != exit::OK {
        bail!("the second backup did not complete");
    }

    step(quiet, "ledgervault snapshots");
    commands::snapshots(&g)?;

    let target = restored.join("firm.db");
    fs::create_dir_all(&restored)?;
    step(
        quiet,
        &format!(
            "ledgervault restore latest --include firm.db --target {}",
            target.display()
        ),
    );
    let code = commands::restore(
        &g,
        RestoreArgs {
            snapshot: "latest".into(),
            target: target.clone(),
            include: vec!["firm.db".into()],
            threads: None,
            force: false,
            no_owner: false,
            globals: false,
            integrity_check: false,
        },
    )?;
    if code != exit::OK {
        bail!("the restore did not complete");
    }
    let live = fs::read(&db)?;
    let back = fs::read(&target)?;
    if live != back {
        bail!("the restored database differs from the live one");
    }
    let (ts_live, ts_back) = (table_stats(&db)?, table_stats(&target)?);
    if ts_live != ts_back {
        bail!("the restored tables differ from the live ones");
    }
    let rows: u64 = ts_back.iter().map(|t| t.1).sum();
    if !quiet {
        println!(
            "the restored firm.db is byte-identical to the live one (BLAKE3 {}), and all {} tables ({} rows) match their row counts and digests",
            &blake3::hash(&back).to_hex()[..16],
            ts_back.len(),
            rows
        );
    }

    step(quiet, "ledgervault verify latest");
    let drill = crate::verify::verify(
        &g,
        VerifyArgs {
            snapshot: "latest".into(),
            all_sources: false,
            if_older_than: None,
            scratch: None,
            scratch_server: None,
            threads: None,
        },
    )?;
    if drill != exit::OK {
        bail!("the restore drill failed");
    }

    step(quiet, "ledgervault check --read-data");
    let code = commands::check(
        &g,
        CheckArgs {
            read_data: true,
            read_data_subset: None,
        },
    )?;
    if !quiet {
        println!(
            "\nTry it yourself:\n  export LEDGERVAULT_REPOSITORY={}\n  export LEDGERVAULT_PASSWORD_FILE={}\n  ledgervault ls latest",
            repo.display(),
            pwfile.display()
        );
    }
    Ok(code)
}
