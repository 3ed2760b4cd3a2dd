//! The demo: sample firm data backed up, listed, restored and checked,
//! with each step shown as the command a person would type.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::args::{BackupArgs, CheckArgs, InitArgs, KdfArgs, RestoreArgs};
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

/// Writes the sample firm: per client a general journal, invoices and a
/// scanned receipt (random bytes standing in for a PDF).
fn write_firm(root: &Path) -> Result<(u64, u64)> {
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

fn same_tree(a: &Path, b: &Path) -> Result<u64> {
    let mut n = 0;
    for entry in fs::read_dir(a)? {
        let entry = entry?;
        let (pa, pb) = (entry.path(), b.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            n += same_tree(&pa, &pb)?;
        } else {
            if fs::read(&pa)?
                != fs::read(&pb).with_context(|| format!("{} is missing", pb.display()))?
            {
                bail!("{} differs from {}", pb.display(), pa.display());
            }
            n += 1;
        }
    }
    Ok(n)
}

fn step(quiet: bool, text: &str) {
    if !quiet {
        println!("\n$ {text}");
    }
}

pub fn run(dir: Option<PathBuf>, quiet: bool) -> Result<i32> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "ledgervault-demo-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S")
        )),
    };
    if dir.exists() && fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} is not empty; give the demo an empty or new folder with --dir",
            dir.display()
        );
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let firm = dir.join("firm");
    let repo = dir.join("repository");
    let restored = dir.join("restored");
    let pwfile = dir.join("password.txt");
    fs::write(&pwfile, "demo password, keep me secret\n")?;
    let (files, bytes) = write_firm(&firm)?;
    if !quiet {
        println!("ledgervault demo: the sample firm Harbor & Pine Accounting");
        println!(
            "  data:       {} ({files} files, {})",
            firm.display(),
            crate::ui::size(bytes)
        );
        println!("  repository: {}", repo.display());
        println!("  password:   in {}", pwfile.display());
    }
    let g = Globals {
        repo: Some(repo.display().to_string()),
        password_file: Some(pwfile.clone()),
        json: false,
        quiet,
    };
    let kdf = KdfArgs {
        argon2_memory_kib: 65536,
        argon2_iterations: 3,
    };
    step(quiet, "ledgervault init");
    commands::init(
        &g,
        InitArgs {
            pack_size_mib: 16,
            kdf,
        },
    )?;

    let backup_args = |reason: Option<&str>| BackupArgs {
        paths: vec![firm.clone()],
        stdin_name: None,
        tags: vec!["nightly".into()],
        reason: reason.map(str::to_string),
        compression: 1,
        threads: None,
    };
    step(
        quiet,
        &format!("ledgervault backup {} --tag nightly", firm.display()),
    );
    if commands::backup(&g, backup_args(None))? != exit::OK {
        bail!("the first backup did not complete");
    }

    // A day of work: new journal entries in one client's books.
    let journal = firm.join("clients/002 Birchwood Bakery LLC/general-journal-2026.csv");
    let mut text = fs::read_to_string(&journal)?;
    text.push_str(&journal_lines(&mut Lcg(7), 15_001, 200));
    fs::write(&journal, text)?;
    if !quiet {
        println!("\n(a day of work: 200 new journal entries for Birchwood Bakery)");
    }
    step(
        quiet,
        &format!(
            "ledgervault backup {} --tag nightly --reason \"before year-end close\"",
            firm.display()
        ),
    );
    if commands::backup(&g, backup_args(Some("before year-end close")))? != exit::OK {
        bail!("the second backup did not complete");
    }

    step(quiet, "ledgervault snapshots");
    commands::snapshots(&g)?;

    step(
        quiet,
        &format!("ledgervault restore latest --target {}", restored.display()),
    );
    let code = commands::restore(
        &g,
        RestoreArgs {
            snapshot: "latest".into(),
            target: restored.clone(),
            include: vec![],
            threads: None,
        },
    )?;
    if code != exit::OK {
        bail!("the restore did not complete");
    }
    let same = same_tree(&firm, &restored.join("firm"))?;
    if !quiet {
        println!("all {same} restored files are byte-identical to the originals");
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
