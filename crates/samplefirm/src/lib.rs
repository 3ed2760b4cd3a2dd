//! The sample firm: a realistic accounting database, generated.
//!
//! One SQLite file holds a firm's shared tables (staff, tax rates, settings,
//! client groups) and, per client, a chart of accounts with a parent
//! hierarchy, customers, vendors, employees, invoices, bills, payments,
//! payroll runs and balanced journal entries. Cross-client links exist on
//! purpose: staff assigned to several clients, intercompany entries between
//! related clients, and consolidated client groups.
//!
//! Everything is deterministic for a given seed, client count and size, and
//! generation runs at tens of MB per second. [`simulate_day`] applies a day
//! of work: new entries plus scattered edits across the file.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{params, Connection};

/// How big a firm to make.
#[derive(Debug, Clone)]
pub struct FirmOptions {
    pub clients: u32,
    /// Approximate size of the database file in bytes.
    pub size: u64,
    pub seed: u64,
}

impl Default for FirmOptions {
    fn default() -> Self {
        FirmOptions {
            clients: 50,
            size: 50_000_000,
            seed: 2026,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, Default)]
pub struct FirmSummary {
    pub clients: u32,
    pub journal_entries: u64,
    pub bytes: u64,
}

pub const SCHEMA: &str = r#"
CREATE TABLE firm_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE staff (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE, role TEXT NOT NULL);
CREATE TABLE tax_rates (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, description TEXT NOT NULL, rate_bp INTEGER NOT NULL);
CREATE TABLE client_groups (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE clients (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
  group_id INTEGER REFERENCES client_groups(id), fiscal_year_end TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE client_staff (client_id INTEGER NOT NULL REFERENCES clients(id), staff_id INTEGER NOT NULL REFERENCES staff(id),
  role TEXT NOT NULL, PRIMARY KEY (client_id, staff_id)) WITHOUT ROWID;
CREATE TABLE accounts (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id),
  parent_id INTEGER REFERENCES accounts(id), code TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, UNIQUE (client_id, code));
CREATE TABLE customers (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), name TEXT NOT NULL, email TEXT, address TEXT);
CREATE TABLE vendors (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), name TEXT NOT NULL, email TEXT, address TEXT);
CREATE TABLE employees (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), name TEXT NOT NULL, salary_cents INTEGER NOT NULL);
CREATE TABLE journal_entries (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), date TEXT NOT NULL,
  memo TEXT NOT NULL, source TEXT NOT NULL, intercompany_entry_id INTEGER REFERENCES journal_entries(id));
CREATE TABLE journal_lines (id INTEGER PRIMARY KEY, entry_id INTEGER NOT NULL REFERENCES journal_entries(id),
  account_id INTEGER NOT NULL REFERENCES accounts(id), debit_cents INTEGER NOT NULL DEFAULT 0, credit_cents INTEGER NOT NULL DEFAULT 0, memo TEXT);
CREATE TABLE invoices (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), customer_id INTEGER NOT NULL REFERENCES customers(id),
  number TEXT NOT NULL, date TEXT NOT NULL, due_date TEXT NOT NULL, total_cents INTEGER NOT NULL, tax_rate_id INTEGER REFERENCES tax_rates(id),
  entry_id INTEGER REFERENCES journal_entries(id), status TEXT NOT NULL);
CREATE TABLE invoice_lines (id INTEGER PRIMARY KEY, invoice_id INTEGER NOT NULL REFERENCES invoices(id), description TEXT NOT NULL,
  quantity INTEGER NOT NULL, unit_cents INTEGER NOT NULL, amount_cents INTEGER NOT NULL);
CREATE TABLE bills (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), vendor_id INTEGER NOT NULL REFERENCES vendors(id),
  number TEXT NOT NULL, date TEXT NOT NULL, due_date TEXT NOT NULL, total_cents INTEGER NOT NULL, entry_id INTEGER REFERENCES journal_entries(id), status TEXT NOT NULL);
CREATE TABLE payments (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), invoice_id INTEGER REFERENCES invoices(id),
  bill_id INTEGER REFERENCES bills(id), date TEXT NOT NULL, amount_cents INTEGER NOT NULL, method TEXT NOT NULL, entry_id INTEGER REFERENCES journal_entries(id));
CREATE TABLE payroll_runs (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients(id), period_end TEXT NOT NULL,
  gross_cents INTEGER NOT NULL, entry_id INTEGER REFERENCES journal_entries(id));
CREATE TABLE payroll_lines (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES payroll_runs(id), employee_id INTEGER NOT NULL REFERENCES employees(id),
  gross_cents INTEGER NOT NULL, tax_cents INTEGER NOT NULL, net_cents INTEGER NOT NULL);
"#;

/// Secondary indexes, created after the bulk load (much faster than
/// maintaining them row by row).
pub const INDEXES: &str = r#"
CREATE INDEX journal_lines_entry ON journal_lines(entry_id);
CREATE INDEX journal_entries_client ON journal_entries(client_id, date);
CREATE INDEX invoices_client ON invoices(client_id, date);
CREATE INDEX accounts_client ON accounts(client_id);
"#;

const FIRST: [&str; 24] = [
    "Avery", "Blake", "Casey", "Dana", "Emery", "Finley", "Gray", "Harper", "Indira", "Jordan",
    "Kai", "Logan", "Morgan", "Noor", "Oakley", "Parker", "Quinn", "Riley", "Sage", "Taylor",
    "Uma", "Val", "Wren", "Yael",
];
const LAST: [&str; 16] = [
    "Anders", "Bishop", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hoang", "Ivanova",
    "Jensen", "Kowalski", "Laurent", "Moreau", "Nakamura", "Okafor", "Petrov",
];
const BUSINESS: [&str; 20] = [
    "Bakery",
    "Dental Practice",
    "Landscaping",
    "Legal Services",
    "Property Management",
    "Auto Repair",
    "Veterinary Clinic",
    "Coffee Roasters",
    "Architecture Studio",
    "Plumbing",
    "Bookshop",
    "Fitness Studio",
    "Print Shop",
    "Catering",
    "Florist",
    "Hardware",
    "Photography",
    "Physiotherapy",
    "Brewery",
    "IT Consulting",
];
const WORDS: [&str; 24] = [
    "monthly",
    "retainer",
    "consulting",
    "supplies",
    "rent",
    "utilities",
    "insurance",
    "freight",
    "repairs",
    "software",
    "advertising",
    "travel",
    "training",
    "materials",
    "services",
    "maintenance",
    "deposit",
    "refund",
    "adjustment",
    "accrual",
    "quarterly",
    "annual",
    "project",
    "inventory",
];
/// (code, name, type, parent code) of every client's chart of accounts.
const CHART: [(&str, &str, &str, Option<&str>); 18] = [
    ("1000", "Assets", "asset", None),
    ("1100", "Cash", "asset", Some("1000")),
    ("1200", "Accounts Receivable", "asset", Some("1000")),
    ("1300", "Intercompany Receivable", "asset", Some("1000")),
    ("1500", "Equipment", "asset", Some("1000")),
    ("2000", "Liabilities", "liability", None),
    ("2100", "Accounts Payable", "liability", Some("2000")),
    ("2200", "Payroll Liabilities", "liability", Some("2000")),
    ("2300", "Sales Tax Payable", "liability", Some("2000")),
    ("2400", "Intercompany Payable", "liability", Some("2000")),
    ("3000", "Equity", "equity", None),
    ("4000", "Revenue", "income", None),
    ("4100", "Service Revenue", "income", Some("4000")),
    ("6000", "Expenses", "expense", None),
    ("6100", "Rent Expense", "expense", Some("6000")),
    ("6200", "Wages Expense", "expense", Some("6000")),
    ("6300", "Supplies Expense", "expense", Some("6000")),
    ("6400", "Professional Fees", "expense", Some("6000")),
];

fn words(rng: &mut StdRng, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
    }
    s
}

fn person(rng: &mut StdRng) -> String {
    format!(
        "{} {}",
        FIRST[rng.gen_range(0..FIRST.len())],
        LAST[rng.gen_range(0..LAST.len())]
    )
}

fn date(rng: &mut StdRng) -> String {
    format!(
        "20{:02}-{:02}-{:02}",
        rng.gen_range(22..27),
        rng.gen_range(1..13),
        rng.gen_range(1..29)
    )
}

/// Accounts of one client, by chart code.
struct Chart {
    ids: Vec<i64>,
}

impl Chart {
    fn id(&self, code: &str) -> i64 {
        self.ids[CHART
            .iter()
            .position(|c| c.0 == code)
            .expect("known account code")]
    }
}

struct Gen<'c> {
    conn: &'c Connection,
    rng: StdRng,
    entries: u64,
}

impl Gen<'_> {
    fn entry(
        &mut self,
        client: i64,
        date: &str,
        memo: &str,
        source: &str,
        lines: &[(i64, i64, i64)],
    ) -> rusqlite::Result<i64> {
        let mut e = self.conn.prepare_cached(
            "INSERT INTO journal_entries (client_id, date, memo, source) VALUES (?1, ?2, ?3, ?4)",
        )?;
        e.execute(params![client, date, memo, source])?;
        let id = self.conn.last_insert_rowid();
        let mut l = self.conn.prepare_cached(
            "INSERT INTO journal_lines (entry_id, account_id, debit_cents, credit_cents, memo) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for &(account, debit, credit) in lines {
            l.execute(params![id, account, debit, credit, memo])?;
        }
        self.entries += 1;
        Ok(id)
    }

    /// One business transaction: an invoice, a bill, a payment, payroll or a
    /// plain journal entry, always balanced.
    fn activity(
        &mut self,
        client: i64,
        chart: &Chart,
        customers: &[i64],
        vendors: &[i64],
        employees: &[i64],
    ) -> rusqlite::Result<()> {
        let d = date(&mut self.rng);
        match self.rng.gen_range(0..10) {
            0..=3 => {
                let customer = customers[self.rng.gen_range(0..customers.len())];
                let n = self.rng.gen_range(1..5);
                let mut total = 0i64;
                let mut lines = Vec::new();
                for _ in 0..n {
                    let qty = self.rng.gen_range(1..20);
                    let unit = self.rng.gen_range(500..50_000);
                    total += qty * unit;
                    lines.push((words(&mut self.rng, 7), qty, unit));
                }
                let tax = total * 8 / 100;
                let memo = format!("invoice for {}", words(&mut self.rng, 6));
                let entry = self.entry(
                    client,
                    &d,
                    &memo,
                    "invoice",
                    &[
                        (chart.id("1200"), total + tax, 0),
                        (chart.id("4100"), 0, total),
                        (chart.id("2300"), 0, tax),
                    ],
                )?;
                self.conn
                    .prepare_cached(
                        "INSERT INTO invoices (client_id, customer_id, number, date, due_date, total_cents, tax_rate_id, entry_id, status)
                         VALUES (?1, ?2, ?3, ?4, ?4, ?5, 1, ?6, 'open')",
                    )?
                    .execute(params![client, customer, format!("INV-{entry:07}"), d, total + tax, entry])?;
                let inv = self.conn.last_insert_rowid();
                let mut il = self.conn.prepare_cached(
                    "INSERT INTO invoice_lines (invoice_id, description, quantity, unit_cents, amount_cents) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (desc, qty, unit) in lines {
                    il.execute(params![inv, desc, qty, unit, qty * unit])?;
                }
                if self.rng.gen_bool(0.6) {
                    let pe = self.entry(
                        client,
                        &d,
                        "customer payment",
                        "payment",
                        &[
                            (chart.id("1100"), total + tax, 0),
                            (chart.id("1200"), 0, total + tax),
                        ],
                    )?;
                    self.conn
                        .prepare_cached("INSERT INTO payments (client_id, invoice_id, date, amount_cents, method, entry_id) VALUES (?1, ?2, ?3, ?4, 'transfer', ?5)")?
                        .execute(params![client, inv, d, total + tax, pe])?;
                }
            }
            4..=5 => {
                let vendor = vendors[self.rng.gen_range(0..vendors.len())];
                let amount = self.rng.gen_range(1_000..500_000);
                let expense = ["6100", "6300", "6400"][self.rng.gen_range(0..3)];
                let memo = format!("vendor bill for {}", words(&mut self.rng, 6));
                let entry = self.entry(
                    client,
                    &d,
                    &memo,
                    "bill",
                    &[
                        (chart.id(expense), amount, 0),
                        (chart.id("2100"), 0, amount),
                    ],
                )?;
                self.conn
                    .prepare_cached(
                        "INSERT INTO bills (client_id, vendor_id, number, date, due_date, total_cents, entry_id, status) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, 'open')",
                    )?
                    .execute(params![client, vendor, format!("B-{entry:07}"), d, amount, entry])?;
            }
            6 => {
                let mut gross = 0;
                let mut pl = Vec::new();
                for &emp in employees {
                    let g = self.rng.gen_range(150_000..900_000);
                    gross += g;
                    pl.push((emp, g));
                }
                let tax = gross / 5;
                let entry = self.entry(
                    client,
                    &d,
                    "payroll run",
                    "payroll",
                    &[
                        (chart.id("6200"), gross, 0),
                        (chart.id("1100"), 0, gross - tax),
                        (chart.id("2200"), 0, tax),
                    ],
                )?;
                self.conn
                    .prepare_cached("INSERT INTO payroll_runs (client_id, period_end, gross_cents, entry_id) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![client, d, gross, entry])?;
                let run = self.conn.last_insert_rowid();
                let mut l = self.conn.prepare_cached(
                    "INSERT INTO payroll_lines (run_id, employee_id, gross_cents, tax_cents, net_cents) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (emp, g) in pl {
                    l.execute(params![run, emp, g, g / 5, g - g / 5])?;
                }
            }
            _ => {
                let amount = self.rng.gen_range(100..200_000);
                let memo = words(&mut self.rng, 9);
                self.entry(
                    client,
                    &d,
                    &memo,
                    "journal",
                    &[(chart.id("6300"), amount, 0), (chart.id("1100"), 0, amount)],
                )?;
            }
        }
        Ok(())
    }
}

fn page_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: u64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(pages * size)
}

/// Creates the sample firm at `path` (which must not exist), in WAL mode.
pub fn generate(path: &Path, opts: &FirmOptions) -> rusqlite::Result<FirmSummary> {
    let clients = opts.clients.max(2);
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144; PRAGMA temp_store = MEMORY;")?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch("BEGIN")?;
    let mut g = Gen {
        conn: &conn,
        rng: StdRng::seed_from_u64(opts.seed),
        entries: 0,
    };
    for (k, v) in [
        ("firm_name", "Harbor & Pine Accounting"),
        ("currency", "USD"),
        ("fiscal_year_end", "12-31"),
        ("retention_years", "7"),
    ] {
        conn.execute(
            "INSERT INTO firm_settings (key, value) VALUES (?1, ?2)",
            params![k, v],
        )?;
    }
    let staff_count = (clients / 4).max(3);
    for i in 0..staff_count {
        let name = person(&mut g.rng);
        let role = [
            "partner",
            "senior accountant",
            "bookkeeper",
            "payroll specialist",
        ][i as usize % 4];
        conn.execute(
            "INSERT INTO staff (name, email, role) VALUES (?1, ?2, ?3)",
            params![name, format!("staff{i}@harborpine.example"), role],
        )?;
    }
    for (code, desc, bp) in [
        ("STD", "Standard sales tax", 800),
        ("RED", "Reduced rate", 400),
        ("EXM", "Exempt", 0),
    ] {
        conn.execute(
            "INSERT INTO tax_rates (code, description, rate_bp) VALUES (?1, ?2, ?3)",
            params![code, desc, bp],
        )?;
    }
    // Every fifth pair of clients forms a consolidated group.
    let groups = (clients / 10).max(1);
    for i in 0..groups {
        conn.execute(
            "INSERT INTO client_groups (name) VALUES (?1)",
            params![format!("{} Holdings", LAST[i as usize % LAST.len()])],
        )?;
    }
    let mut charts = Vec::new();
    let mut parties = Vec::new();
    for c in 1..=clients as i64 {
        let group: Option<i64> = if c % 5 == 1 || c % 5 == 2 {
            Some(((c - 1) / 10) % groups as i64 + 1)
        } else {
            None
        };
        let name = format!(
            "{} {}",
            LAST[c as usize % LAST.len()],
            BUSINESS[c as usize % BUSINESS.len()]
        );
        conn.execute(
            "INSERT INTO clients (id, code, name, group_id, fiscal_year_end, created) VALUES (?1, ?2, ?3, ?4, '12-31', ?5)",
            params![c, format!("C{c:04}"), name, group, date(&mut g.rng)],
        )?;
        // A lead and a second staff member; staff serve several clients.
        let lead = (c - 1) % staff_count as i64 + 1;
        let second = c % staff_count as i64 + 1;
        conn.execute(
            "INSERT INTO client_staff (client_id, staff_id, role) VALUES (?1, ?2, 'lead')",
            params![c, lead],
        )?;
        conn.execute(
            "INSERT INTO client_staff (client_id, staff_id, role) VALUES (?1, ?2, 'support')",
            params![c, second],
        )?;
        let mut ids = Vec::new();
        for (code, name, ty, parent) in CHART {
            let parent_id = parent.map(|p| ids[CHART.iter().position(|x| x.0 == p).unwrap()]);
            conn.execute(
                "INSERT INTO accounts (client_id, parent_id, code, name, type) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![c, parent_id, code, name, ty],
            )?;
            ids.push(conn.last_insert_rowid());
        }
        charts.push(Chart { ids });
        let mut cust = Vec::new();
        let mut vend = Vec::new();
        let mut emps = Vec::new();
        for i in 0..20 {
            let n = person(&mut g.rng);
            conn.execute(
                "INSERT INTO customers (client_id, name, email, address) VALUES (?1, ?2, ?3, ?4)",
                params![
                    c,
                    n,
                    format!("customer{i}@client{c}.example"),
                    format!(
                        "{} {} Street",
                        g.rng.gen_range(1..999),
                        LAST[i % LAST.len()]
                    )
                ],
            )?;
            cust.push(conn.last_insert_rowid());
        }
        for i in 0..10 {
            conn.execute(
                "INSERT INTO vendors (client_id, name, email, address) VALUES (?1, ?2, ?3, ?4)",
                params![
                    c,
                    format!("{} Supply", LAST[(i + c as usize) % LAST.len()]),
                    format!("ap{i}@vendor.example"),
                    format!("{} Market Road", g.rng.gen_range(1..999))
                ],
            )?;
            vend.push(conn.last_insert_rowid());
        }
        for _ in 0..g.rng.gen_range(2..8) {
            let n = person(&mut g.rng);
            conn.execute(
                "INSERT INTO employees (client_id, name, salary_cents) VALUES (?1, ?2, ?3)",
                params![c, n, g.rng.gen_range(3_000_000..12_000_000)],
            )?;
            emps.push(conn.last_insert_rowid());
        }
        parties.push((cust, vend, emps));
    }
    // Intercompany entries between the two clients of each group.
    for c in (1..=clients as i64).filter(|c| c % 5 == 1 && *c < clients as i64) {
        let (a, b) = (c, c + 1);
        let amount = g.rng.gen_range(100_000..5_000_000);
        let d = date(&mut g.rng);
        let ea = g.entry(
            a,
            &d,
            "intercompany loan",
            "intercompany",
            &[
                (charts[a as usize - 1].id("1300"), amount, 0),
                (charts[a as usize - 1].id("1100"), 0, amount),
            ],
        )?;
        let eb = g.entry(
            b,
            &d,
            "intercompany loan",
            "intercompany",
            &[
                (charts[b as usize - 1].id("1100"), amount, 0),
                (charts[b as usize - 1].id("2400"), 0, amount),
            ],
        )?;
        conn.execute(
            "UPDATE journal_entries SET intercompany_entry_id = ?1 WHERE id = ?2",
            params![eb, ea],
        )?;
        conn.execute(
            "UPDATE journal_entries SET intercompany_entry_id = ?1 WHERE id = ?2",
            params![ea, eb],
        )?;
    }
    // Activity, round-robin over clients, until the file reaches its size.
    let mut round = 0u64;
    loop {
        for c in 1..=clients as i64 {
            let (cust, vend, emps) = &parties[c as usize - 1];
            for _ in 0..8 {
                g.activity(c, &charts[c as usize - 1], cust, vend, emps)?;
            }
        }
        round += 1;
        // Indexes come last and add about a fifth to the file.
        if round.is_multiple_of(4) && page_bytes(&conn)? * 6 / 5 >= opts.size {
            break;
        }
    }
    conn.execute_batch(INDEXES)?;
    conn.execute_batch("COMMIT")?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    let bytes = page_bytes(&conn)?;
    Ok(FirmSummary {
        clients,
        journal_entries: g.entries,
        bytes,
    })
}

/// What a simulated day changed.
#[derive(Debug, Clone, Default)]
pub struct DaySummary {
    pub new_entries: u64,
    pub edited_rows: u64,
}

/// A day of work: new business for many clients, plus scattered edits
/// (memo corrections, invoice status changes, address updates) touching
/// roughly `edit_fraction` of the file's pages.
pub fn simulate_day(path: &Path, seed: u64, edit_fraction: f64) -> rusqlite::Result<DaySummary> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let mut g = Gen {
        conn: &conn,
        rng: StdRng::seed_from_u64(seed),
        entries: 0,
    };
    let clients: i64 = conn.query_row("SELECT count(*) FROM clients", [], |r| r.get(0))?;
    let pages: u64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let max_line: i64 = conn.query_row("SELECT max(id) FROM journal_lines", [], |r| r.get(0))?;
    let max_inv: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM invoices", [], |r| {
        r.get(0)
    })?;
    conn.execute_batch("BEGIN")?;
    let mut summary = DaySummary::default();
    let new = (pages / 200).max(20);
    for _ in 0..new {
        let c = g.rng.gen_range(1..=clients);
        let chart = Chart {
            ids: conn
                .prepare_cached("SELECT id FROM accounts WHERE client_id = ?1 ORDER BY id")?
                .query_map([c], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?,
        };
        let cust: Vec<i64> = conn
            .prepare_cached("SELECT id FROM customers WHERE client_id = ?1")?
            .query_map([c], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let vend: Vec<i64> = conn
            .prepare_cached("SELECT id FROM vendors WHERE client_id = ?1")?
            .query_map([c], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let emps: Vec<i64> = conn
            .prepare_cached("SELECT id FROM employees WHERE client_id = ?1")?
            .query_map([c], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        g.activity(c, &chart, &cust, &vend, &emps)?;
    }
    summary.new_entries = g.entries;
    let edits = ((pages as f64) * edit_fraction) as u64;
    for i in 0..edits {
        if i % 4 == 0 && max_inv > 0 {
            let id = g.rng.gen_range(1..=max_inv);
            conn.prepare_cached("UPDATE invoices SET status = 'paid' WHERE id = ?1")?
                .execute([id])?;
        } else {
            let id = g.rng.gen_range(1..=max_line);
            let memo = format!("corrected: {}", words(&mut g.rng, 2));
            conn.prepare_cached("UPDATE journal_lines SET memo = ?1 WHERE id = ?2")?
                .execute(params![memo, id])?;
        }
        summary.edited_rows += 1;
    }
    conn.execute_batch("COMMIT")?;
    // Checkpoint so the edits reach the main file, as a quiet night would.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(summary)
}

/// Clients whose journal does not balance (debits ≠ credits); empty when sound.
pub fn unbalanced_clients(conn: &Connection) -> rusqlite::Result<Vec<i64>> {
    conn.prepare(
        "SELECT e.client_id FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id
         GROUP BY e.client_id HAVING sum(l.debit_cents) != sum(l.credit_cents)",
    )?
    .query_map([], |r| r.get(0))?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_firm_is_sound_and_deterministic() {
        let dir = std::env::temp_dir().join(format!("lv-firm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = FirmOptions {
            clients: 6,
            size: 2_000_000,
            seed: 7,
        };
        let (a, b) = (dir.join("a.db"), dir.join("b.db"));
        let _ = std::fs::remove_file(&a);
        let _ = std::fs::remove_file(&b);
        let s = generate(&a, &opts).unwrap();
        generate(&b, &opts).unwrap();
        // The size is approximate: indexes are added after the size check.
        assert!(
            s.bytes >= 1_600_000 && s.bytes <= 2_600_000 && s.journal_entries > 100,
            "{s:?}"
        );
        let conn = Connection::open(&a).unwrap();
        assert!(unbalanced_clients(&conn).unwrap().is_empty());
        let ic: i64 = conn
            .query_row(
                "SELECT count(*) FROM journal_entries WHERE intercompany_entry_id IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(ic >= 2);
        let shared: i64 = conn.query_row("SELECT count(*) FROM (SELECT staff_id FROM client_staff GROUP BY staff_id HAVING count(*) > 1)", [], |r| r.get(0)).unwrap();
        assert!(shared >= 1);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        // Same seed, same books.
        let count = |p: &Path| -> i64 {
            Connection::open(p)
                .unwrap()
                .query_row("SELECT sum(debit_cents) FROM journal_lines", [], |r| {
                    r.get(0)
                })
                .unwrap()
        };
        assert_eq!(count(&a), count(&b));
        let d = simulate_day(&a, 1, 0.05).unwrap();
        assert!(d.new_entries >= 20 && d.edited_rows > 0);
        assert!(unbalanced_clients(&Connection::open(&a).unwrap())
            .unwrap()
            .is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
