#!/usr/bin/env python3
"""A multi-company Tryton database (trytond + account_invoice), filled through
Tryton's own API (trytond-admin to create/activate, then proteus models,
buttons and wizards); nothing is inserted by hand.

    tryton_firm.py make   DBURL            create DB + 3 companies
    tryton_firm.py list   DBURL            [{"id":..,"name":..}, ...]
    tryton_firm.py report DBURL ID|NAME    one JSON line: Tryton's own trial
                                           balance (account.general_ledger.account)
                                           and balance sheet (account.account.type)
DBURL: sqlite:////abs/dir/NAME.sqlite      (Tryton keeps DIR/NAME.sqlite)
       postgresql://user@127.0.0.1:PORT/NAME (the database must exist, empty)

Deterministic: fixed seed and a fixed fiscal year (2024) for every date.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
from datetime import date
from decimal import Decimal

YEAR = 2024
SEED = 8121
COMPANIES = [
    ("Elm Street Bakery", 4, 3),
    ("Fjord Shipping AS", 3, 4),
    ("Granite Legal LLP", 5, 3),
]


def parse(url):
    """-> (env for trytond, database name)"""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        directory, fname = os.path.split(path)
        name = fname[:-len(".sqlite")] if fname.endswith(".sqlite") else fname
        return {"TRYTOND_DATABASE__URI": "sqlite://",
                "TRYTOND_DATABASE__PATH": directory or "."}, name, path
    if url.startswith(("postgresql://", "postgres://")):
        base, name = url.rsplit("/", 1)
        return {"TRYTOND_DATABASE__URI": base + "/"}, name, None
    sys.exit(f"unsupported DBURL {url}")


def connect(url):
    env, name, _ = parse(url)
    os.environ.update(env)
    from proteus import config as pconfig
    cfg = pconfig.set_trytond(database=name)
    cfg.skip_warning = True  # e.g. "payment date in the past" (fixed 2024 dates)
    return cfg


def admin(url):
    env, name, path = parse(url)
    if path and not os.path.exists(path):
        open(path, "wb").close()  # the SQLite backend opens an existing file
    with tempfile.NamedTemporaryFile("w", delete=False) as pw:
        pw.write("admin\n")
    e = dict(os.environ, **env, TRYTONPASSFILE=pw.name)
    exe = os.path.join(os.path.dirname(sys.executable), "trytond-admin")
    subprocess.run([exe, "-d", name, "--all", "-u", "account_invoice",
                    "--activate-dependencies", "--email", "admin@firm.example"],
                   env=e, stdin=subprocess.DEVNULL, check=True,
                   stdout=subprocess.DEVNULL)
    os.unlink(pw.name)


def d(month, day):
    return date(YEAR, month, day)


def cmd_make(url):
    admin(url)
    cfg = connect(url)
    from proteus import Model, Wizard
    from trytond.modules.account.tests.tools import (
        create_chart, create_fiscalyear, create_tax, get_accounts)
    from trytond.modules.account_invoice.tests.tools import (
        set_fiscalyear_invoice_sequences)
    from trytond.modules.currency.tests.tools import get_currency

    rng = random.Random(SEED)
    Party = Model.get("party.party")
    Company = Model.get("company.company")
    User = Model.get("res.user")
    Journal = Model.get("account.journal")
    Invoice = Model.get("account.invoice")
    InvoiceLine = Model.get("account.invoice.line")
    PaymentMethod = Model.get("account.invoice.payment.method")
    PaymentTerm = Model.get("account.invoice.payment_term")
    Move = Model.get("account.move")
    Account = Model.get("account.account")

    usd = get_currency("USD")
    eur = get_currency("EUR")
    journal_cash, = Journal.find([("type", "=", "cash")], limit=1)
    journal_misc, = Journal.find([("type", "=", "general")], limit=1)
    term = PaymentTerm(name="Net 30")
    line = term.lines.new(type="remainder")
    line.relativedeltas.new(days=30)
    term.save()

    def amt(lo, hi):
        return Decimal(rng.randrange(lo * 100, hi * 100)) / 100

    made = []
    for idx, (cname, n_cust, n_sup) in enumerate(COMPANIES, start=1):
        party = Party(name=cname)
        party.save()
        company = Company(party=party, currency=usd if idx != 2 else eur)
        company.save()
        user = User(cfg.user)
        user.companies.append(Company(company.id))
        user.company = Company(company.id)
        user.save()
        cfg._context = User.get_preferences(True, {})
        company = Company(company.id)

        create_chart(company)
        accounts = get_accounts(company)
        receivable, payable = accounts["receivable"], accounts["payable"]
        revenue = accounts["revenue"]
        # get_accounts() would pick 2.2.1 "Accrued Expenses" (an expense type);
        # use the chart's cost-of-sales account for supplier invoices.
        expense, = Account.find([("company", "=", company.id),
                                 ("code", "=", "5.1.1")])
        cash = accounts["cash"]

        fy = set_fiscalyear_invoice_sequences(
            create_fiscalyear(company, today=(d(1, 1), d(12, 31))))
        fy.click("create_period")
        periods = {p.start_date.month: p for p in fy.periods}

        tax = create_tax(Decimal("0.10") + Decimal(idx) / 100, company)
        tax.save()

        pm = PaymentMethod(name=f"Bank {idx}", company=company,
                           journal=journal_cash, credit_account=cash,
                           debit_account=cash)
        pm.save()

        customers = []
        for k in range(n_cust):
            p = Party(name=f"Customer {idx}-{k + 1}")
            p.addresses[0].city = f"Town {k}"
            p.save()
            customers.append(p)
        suppliers = []
        for k in range(n_sup):
            p = Party(name=f"Supplier {idx}-{k + 1}")
            p.save()
            suppliers.append(p)

        def invoice(kind, party, when, items, ref):
            inv = Invoice(type=kind, party=party, payment_term=term,
                          invoice_date=when, reference=ref)
            if kind == "in":
                inv.accounting_date = when
            for desc, acc, qty, price in items:
                line = InvoiceLine()
                inv.lines.append(line)
                line.account = acc
                line.description = desc
                line.quantity = qty
                line.unit_price = price
                line.taxes.append(type(tax)(tax.id))
            inv.save()
            inv.click("post")
            return inv

        def pay(inv, when, amount=None):
            w = Wizard("account.invoice.pay", [inv])
            w.form.payment_method = pm
            w.form.date = when
            if amount is not None:
                w.form.amount = amount
            w.execute("choice")
            if w.state != "end":  # partial payment: keep the remainder open
                w.form.type = "partial"
                w.execute("pay")

        for k, cust in enumerate(customers):
            for m in range(2):
                items = [(f"Service {j + 1}", revenue, rng.randint(1, 5),
                          amt(20, 600)) for j in range(rng.randint(2, 4))]
                inv = invoice("out", cust, d(1 + (2 * k + m) % 10, 5 + m),
                              items, f"SO-{idx}{k}{m}")
                if m == 0:
                    pay(inv, d(11, 1 + k))
                elif k % 2:
                    pay(inv, d(11, 15), (inv.total_amount / 2).quantize(
                        Decimal("0.01")))
        for k, sup in enumerate(suppliers):
            items = [(f"Supply {j + 1}", expense, rng.randint(1, 3),
                      amt(30, 800)) for j in range(rng.randint(2, 3))]
            inv = invoice("in", sup, d(2 + k % 8, 10), items, f"BILL-{idx}{k}")
            if k != 0:
                pay(inv, d(10, 1 + k))

        # manual journal entries, posted
        def by_code(code):
            a, = Account.find([("company", "=", company.id),
                               ("code", "=", code)])
            return a
        equity, sga = by_code("3.1.1"), by_code("5.2.2")
        for j, (month, amount) in enumerate([(1, Decimal(50000 + 1000 * idx)),
                                             (6, amt(100, 900)),
                                             (12, amt(100, 900))]):
            move = Move(journal=journal_misc, period=periods[month],
                        date=d(month, 2), description=f"Journal entry {j + 1}")
            dr = move.lines.new(account=cash if j == 0 else sga,
                                debit=amount, credit=Decimal(0))
            cr = move.lines.new(account=equity if j == 0 else cash,
                                debit=Decimal(0), credit=amount)
            del dr, cr
            move.save()
            move.click("post")
        made.append(company.id)
    print(json.dumps({"made": made}))


def companies():
    from proteus import Model
    Company = Model.get("company.company")
    return Company.find([], order=[("id", "ASC")])


def cmd_list(url):
    connect(url)
    print(json.dumps([{"id": c.id, "name": c.party.name} for c in companies()]))


def num(x):
    q = Decimal(x).quantize(Decimal("0.01"))
    return str(abs(q) if q == 0 else q)  # no "-0.00"


def cmd_report(url, key):
    cfg = connect(url)
    from proteus import Model
    match = [c for c in companies() if str(c.id) == key or c.party.name == key]
    if len(match) != 1:
        sys.exit(f"no single company matches {key!r}")
    company = match[0]
    FiscalYear = Model.get("account.fiscalyear")
    # Read as root (user 0): record rules would otherwise limit us to the
    # admin user's stored current company (cached per process), and switching
    # that would write to the database. Context company selects the books.
    cfg.user = 0
    cfg._context = dict(cfg.context, company=company.id)
    with cfg.set_context(company=company.id):
        fy, = FiscalYear.find([("company", "=", company.id)])
    ctx = dict(company=company.id, fiscalyear=fy.id, posted=True)
    with cfg.set_context(**ctx):
        GLAccount = Model.get("account.general_ledger.account")
        rows = GLAccount.find([("company", "=", company.id)],
                              order=[("id", "ASC")])
        per_account = {f"{r.account.code or ''} {r.account.name}": {
            "debit": num(r.debit), "credit": num(r.credit),
            "end_balance": num(r.end_balance)} for r in rows
            if r.debit or r.credit or r.start_balance}
        tb = {"debit": num(sum((r.debit for r in rows), Decimal(0))),
              "credit": num(sum((r.credit for r in rows), Decimal(0)))}
    with cfg.set_context(company=company.id, date=fy.end_date, posted=True):
        AccountType = Model.get("account.account.type")
        roots = AccountType.find([("company", "=", company.id),
                                  ("parent", "=", None)])
        bs, income = {}, {}

        def walk(t, depth):
            if depth > 2:
                return
            if t.statement == "balance":
                bs[t.name] = num(t.amount)
            elif t.statement == "income":
                income[t.name] = num(t.amount)
            for c in t.childs:
                walk(c, depth + 1)
        for t in roots:
            walk(t, 0)
    Invoice = Model.get("account.invoice")
    with cfg.set_context(company=company.id):
        invs = Invoice.find([("company", "=", company.id)])
        inv_state = {}
        for i in invs:
            inv_state[i.state] = inv_state.get(i.state, 0) + 1
    out = {"company": {"id": company.id, "name": company.party.name,
                       "currency": company.currency.code},
           "fiscalyear": fy.name,
           "trial_balance": tb, "accounts": per_account,
           "balance_sheet": bs, "income_statement": income,
           "invoices": inv_state}
    print(json.dumps(out, sort_keys=True))


def main(argv):
    if len(argv) < 3 or argv[1] not in ("make", "list", "report") or \
            (argv[1] == "report" and len(argv) != 4):
        sys.exit(__doc__)
    {"make": cmd_make, "list": cmd_list}.get(argv[1], cmd_report)(*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
