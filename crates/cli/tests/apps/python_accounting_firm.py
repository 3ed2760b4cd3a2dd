#!/usr/bin/env python3
"""A multi-client accounting firm database built with python-accounting (PyPI).

Every row is written through the library's own models, transactions and
posting logic (SQLAlchemy ORM); nothing is inserted by hand.

    python_accounting_firm.py make   DBURL [other]    create tables + 4 entities
                                                      (other: another firm, 3)
    python_accounting_firm.py list   DBURL            [{"id":..,"name":..}, ...]
    python_accounting_firm.py report DBURL ID|NAME    one JSON line of the
                                                      library's own reports
    python_accounting_firm.py post   DBURL ID|NAME    one more journal entry
DBURL: sqlite:////abs/path/firm.db or postgresql://user@127.0.0.1:PORT/db

Deterministic: fixed seed, fixed names, fixed month/day. The library only
accepts transactions inside the entity's *current* reporting period, which it
derives from today's date, so transaction dates are in the current calendar
year (opening balances in the previous one); reports are computed as at
31 December of the current year. Amounts, names, codes, transaction numbers and
report figures are identical on every run; created_at/updated_at timestamps and
the hash chain of the ledger (which covers transaction dates) differ by year.
"""
import json
import random
import sys
from datetime import datetime
from decimal import Decimal

from sqlalchemy import create_engine, select

from python_accounting.config import config
from python_accounting.database.session import get_session
from python_accounting.models import (
    Account,
    Assignment,
    Balance,
    Base,
    Category,
    Currency,
    Entity,
    LineItem,
    Tax,
    Transaction,
    User,
)
from python_accounting.reports import BalanceSheet, IncomeStatement, TrialBalance
from python_accounting.transactions import (
    CashPurchase,
    CashSale,
    ClientInvoice,
    ClientReceipt,
    ContraEntry,
    CreditNote,
    DebitNote,
    JournalEntry,
    SupplierBill,
    SupplierPayment,
)

SEED = 20240611
YEAR = datetime.today().year
END = datetime(YEAR, 12, 31)

AT = Account.AccountType

# (name, currency code, currency name, #clients, #suppliers)
FIRMS = [
    ("Acme Bakery Ltd", "USD", "US Dollars", 4, 3),
    ("Birch & Sons Carpentry", "EUR", "Euro", 3, 4),
    ("Cobalt IT Consulting", "GBP", "Pound Sterling", 5, 3),
    ("Delta Dental Practice", "USD", "US Dollars", 3, 3),
]
# Another firm's database (`make DBURL other`): other clients, other figures,
# the same kinds of ids (so the two firms' ids overlap).
OTHER_FIRM = [
    ("Elm Street Florist", "USD", "US Dollars", 3, 3),
    ("Fir Tree Nursery", "EUR", "Euro", 4, 2),
    ("Gale Wind Energy", "USD", "US Dollars", 2, 3),
]


def engine_for(url):
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3; we ship psycopg2(-binary)
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]
    config.configure_database(url)
    return create_engine(url)


def d(month, day):
    return datetime(YEAR, month, day, 10, 0, 0)


def li(session, entity, narration, account, amount, quantity=1, tax=None,
       credited=False):
    item = LineItem(
        narration=narration,
        account_id=account.id,
        amount=Decimal(amount),
        quantity=Decimal(quantity),
        tax_id=tax.id if tax else None,
        credited=credited,
        entity_id=entity.id,
    )
    session.add(item)
    session.flush()
    return item


def post(session, entity, cls, narration, date, main_account, items, **kw):
    """Create a transaction of class cls with the given (narration, account,
    amount, quantity, tax, credited) line items and post it to the ledger."""
    tx = cls(
        narration=narration,
        transaction_date=date,
        account_id=main_account.id,
        entity_id=entity.id,
        **kw,
    )
    session.add(tx)
    session.flush()
    made = [li(session, entity, *it) for it in items]
    tx.line_items.update(made)
    session.add(tx)
    tx.post(session)
    return tx


def make_entity(engine, idx, name, ccode, cname, n_clients, n_suppliers, rng):
    with get_session(engine) as session:
        entity = Entity(name=name, mid_year_balances=False)
        session.add(entity)
        session.commit()  # sets up the entity's reporting period
        cur = Currency(name=cname, code=ccode, entity_id=entity.id)
        session.add(cur)
        session.commit()
        entity.currency_id = cur.id
        session.add(entity)
        session.commit()

        session.add_all([
            User(name=f"Partner {idx}", email=f"partner{idx}@firm.example",
                 entity_id=entity.id),
            User(name=f"Clerk {idx}", email=f"clerk{idx}@firm.example",
                 entity_id=entity.id),
        ])
        session.commit()

        def cat(n, t):
            c = Category(name=n, category_account_type=t, entity_id=entity.id)
            session.add(c)
            session.flush()
            return c

        cat_bank = cat("Bank accounts", AT.BANK)
        cat_rev = cat("Sales", AT.OPERATING_REVENUE)
        cat_ar = cat("Trade debtors", AT.RECEIVABLE)
        cat_ap = cat("Trade creditors", AT.PAYABLE)
        session.commit()

        def acct(n, t, category=None, desc=None):
            a = Account(name=n, account_type=t, currency_id=cur.id,
                        category_id=category.id if category else None,
                        description=desc, entity_id=entity.id)
            session.add(a)
            session.commit()
            return a

        bank = acct("Main Bank", AT.BANK, cat_bank)
        bank2 = acct("Savings Bank", AT.BANK, cat_bank)
        rev1 = acct("Product Sales", AT.OPERATING_REVENUE, cat_rev)
        rev2 = acct("Service Fees", AT.OPERATING_REVENUE, cat_rev)
        other_rev = acct("Interest Income", AT.NON_OPERATING_REVENUE)
        opex = acct("Rent & Utilities", AT.OPERATING_EXPENSE)
        direct = acct("Materials", AT.DIRECT_EXPENSE)
        overhead = acct("Depreciation", AT.OVERHEAD_EXPENSE)
        fixed = acct("Equipment", AT.NON_CURRENT_ASSET)
        tax_ctl = acct("VAT Control", AT.CONTROL)
        equity = acct("Owner Capital", AT.EQUITY)
        loan = acct("Bank Loan", AT.NON_CURRENT_LIABILITY)
        clients = [acct(f"Client {idx}-{k + 1}", AT.RECEIVABLE, cat_ar,
                        f"customer number C{idx}{k + 1:02}")
                   for k in range(n_clients)]
        suppliers = [acct(f"Supplier {idx}-{k + 1}", AT.PAYABLE, cat_ap,
                          f"vendor number V{idx}{k + 1:02}")
                     for k in range(n_suppliers)]
        # a soft-deleted (recycled) account: leaves a row in `recycled`
        obsolete = acct("Obsolete Petty Cash", AT.BANK)
        session.delete(obsolete)

        vat = Tax(name="Standard VAT", code=f"VS{idx}", rate=Decimal(16),
                  account_id=tax_ctl.id, entity_id=entity.id)
        vat_low = Tax(name="Reduced VAT", code=f"VR{idx}", rate=Decimal(8),
                      account_id=tax_ctl.id, entity_id=entity.id)
        session.add_all([vat, vat_low])
        session.commit()

        # opening balance brought forward from last year on the first client
        ob = Balance(
            transaction_date=datetime(YEAR - 1, 11, 30),
            transaction_type=Transaction.TransactionType.CLIENT_INVOICE,
            amount=Decimal(500 + 100 * idx),
            balance_type=Balance.BalanceType.DEBIT,
            account_id=clients[0].id,
            reference=f"OB-{idx}",
            entity_id=entity.id,
        )
        # ... balanced by a credit brought forward on the owner's capital
        ob_eq = Balance(
            transaction_date=datetime(YEAR - 1, 11, 30),
            transaction_type=Transaction.TransactionType.JOURNAL_ENTRY,
            amount=Decimal(500 + 100 * idx),
            balance_type=Balance.BalanceType.CREDIT,
            account_id=equity.id,
            reference=f"OB-{idx}",
            entity_id=entity.id,
        )
        session.add_all([ob, ob_eq])
        session.commit()

        def amt(lo, hi):
            return Decimal(rng.randrange(lo * 100, hi * 100)) / 100

        # capital injection (compound journal entry: Dr bank, Cr equity + loan)
        cap = Decimal(50000 + 10000 * idx)
        post(session, entity, JournalEntry, "Capital and loan", d(1, 3), bank,
             [("Owner capital", equity, cap * 3 / 5, 1, None, True),
              ("Loan drawdown", loan, cap * 2 / 5, 1, None, True)],
             compound=True, credited=False, main_account_amount=cap)

        invoices = []
        month = 1
        for k, client in enumerate(clients):
            for m in range(2):
                month = 1 + (2 * k + m) % 10
                items = [
                    (f"Goods batch {j + 1}", rev1 if j % 2 == 0 else rev2,
                     amt(50, 900), rng.randint(1, 6),
                     vat if j % 3 != 2 else vat_low)
                    for j in range(rng.randint(2, 4))
                ]
                invoices.append(post(session, entity, ClientInvoice,
                                     f"Invoice to {client.name}",
                                     d(month, 5 + m), client, items,
                                     reference=f"PO-{idx}{k}{m}"))

        # receipts: full for the first invoice of each client, part for some
        for k, client in enumerate(clients):
            inv = invoices[2 * k]
            full = inv.amount
            rec = post(session, entity, ClientReceipt,
                       f"Receipt from {client.name}", d(11, 2 + k), client,
                       [("Bank transfer", bank, full, 1, None)])
            session.add(Assignment(assignment_date=d(11, 2 + k),
                                   transaction_id=rec.id, assigned_id=inv.id,
                                   assigned_type=inv.__class__.__name__,
                                   amount=full, entity_id=entity.id))
            session.commit()
            if k % 2 == 1:
                part = (invoices[2 * k + 1].amount / 2).quantize(Decimal("0.01"))
                rec2 = post(session, entity, ClientReceipt,
                            f"Part receipt from {client.name}", d(11, 20),
                            client, [("Cheque", bank, part, 1, None)])
                session.add(Assignment(
                    assignment_date=d(11, 20), transaction_id=rec2.id,
                    assigned_id=invoices[2 * k + 1].id,
                    assigned_type=invoices[2 * k + 1].__class__.__name__,
                    amount=part, entity_id=entity.id))
                session.commit()
        # the opening balance of the first client is cleared by a receipt
        obr = post(session, entity, ClientReceipt, "Receipt of opening balance",
                   d(2, 14), clients[0],
                   [("Old invoice settled", bank, ob.amount, 1, None)])
        session.add(Assignment(assignment_date=d(2, 14), transaction_id=obr.id,
                               assigned_id=ob.id, assigned_type="Balance",
                               amount=ob.amount, entity_id=entity.id))
        session.commit()

        bills = []
        for k, sup in enumerate(suppliers):
            items = [
                (f"Supply {j + 1}", [fixed, direct, opex][j % 3],
                 amt(40, 1500), rng.randint(1, 3), vat)
                for j in range(rng.randint(2, 3))
            ]
            bills.append(post(session, entity, SupplierBill,
                              f"Bill from {sup.name}", d(3 + k % 8, 10), sup,
                              items, reference=f"BILL-{idx}{k}"))
            pay = post(session, entity, SupplierPayment,
                       f"Payment to {sup.name}", d(10, 1 + k), sup,
                       [("Wire", bank, bills[-1].amount, 1, None)])
            session.add(Assignment(assignment_date=d(10, 1 + k),
                                   transaction_id=pay.id,
                                   assigned_id=bills[-1].id,
                                   assigned_type=bills[-1].__class__.__name__,
                                   amount=bills[-1].amount,
                                   entity_id=entity.id))
            session.commit()

        # notes, cash trades, contra entry, simple journal entries
        post(session, entity, CreditNote, "Returned goods", d(6, 18), clients[-1],
             [("Return", rev1, amt(20, 80), 1, vat)])
        post(session, entity, DebitNote, "Damaged supplies", d(7, 9), suppliers[-1],
             [("Return to vendor", direct, amt(20, 80), 1, vat)])
        for j in range(3):
            post(session, entity, CashSale, f"Counter sale {j + 1}", d(4 + j, 21),
                 bank, [("Walk-in", rev1, amt(10, 200), rng.randint(1, 5), vat),
                        ("Service", rev2, amt(10, 200), 1, vat_low)])
        post(session, entity, CashPurchase, "Office supplies", d(5, 12), bank,
             [("Paper", opex, amt(5, 50), 10, vat),
              ("Toner", opex, amt(30, 90), 2, vat)])
        post(session, entity, ContraEntry, "Transfer to savings", d(8, 1), bank2,
             [("Sweep", bank, Decimal(5000 + idx), 1, None)])
        post(session, entity, JournalEntry, "Depreciation charge", d(9, 30), fixed,
             [("Equipment depreciation", overhead, amt(100, 400), 1, None)])
        post(session, entity, JournalEntry, "Interest received", d(9, 30), other_rev,
             [("Savings interest", bank2, amt(5, 60), 1, None)],
             credited=True)
        return entity.id


def cmd_make(url, which="firm"):
    engine = engine_for(url)
    Base.metadata.create_all(engine)
    rng = random.Random(SEED if which == "firm" else SEED + 1)
    ids = []
    firms = FIRMS if which == "firm" else OTHER_FIRM
    for idx, (name, cc, cn, nc, ns) in enumerate(firms, start=1):
        ids.append(make_entity(engine, idx, name, cc, cn, nc, ns, rng))
    print(json.dumps({"made": ids}))


def entities(session):
    return session.scalars(select(Entity).order_by(Entity.id)).all()


def cmd_list(url):
    engine = engine_for(url)
    with get_session(engine) as session:
        print(json.dumps([{"id": e.id, "name": e.name} for e in entities(session)]))


def num(x):
    return str(Decimal(x).quantize(Decimal("0.0001")))


def cmd_report(url, key):
    engine = engine_for(url)
    with get_session(engine) as session:
        match = [e for e in entities(session) if str(e.id) == key or e.name == key]
        if len(match) != 1:
            sys.exit(f"no single entity matches {key!r}")
        session.entity = match[0]
        tb = TrialBalance(session, END)
        bs = BalanceSheet(session, END)
        net_profit = IncomeStatement.net_profit(session, None, END)
        accounts = session.scalars(select(Account).order_by(Account.account_code)).all()
        per_account = {
            f"{a.account_code} {a.name}": num(a.closing_balance(session, END))
            for a in accounts
        }
        sections = lambda rep: {  # noqa: E731
            s: {k: num(v) for k, v in b.items()}
            for s, b in rep.balances.items() if isinstance(b, dict)
        }
        out = {
            "entity": {"id": session.entity.id, "name": session.entity.name,
                       "currency": session.entity.currency.code},
            "as_at": END.date().isoformat(),
            "trial_balance": {
                "debit": num(tb.result_amounts["DEBIT"]),
                "credit": num(tb.result_amounts["CREDIT"]),
                "totals": {k: num(v) for k, v in tb.totals.items()},
                "sections": sections(tb),
            },
            "balance_sheet": {
                "totals": {k: num(v) for k, v in bs.totals.items()},
                "net_assets": num(bs.result_amounts["NET_ASSETS"]),
                "total_equity": num(bs.result_amounts["TOTAL_EQUITY"]),
                "sections": sections(bs),
            },
            "net_profit": num(net_profit),
            "accounts": per_account,
            "counts": {
                "transactions": len(session.scalars(select(Transaction)).all()),
                "ledger_secure": all(t.is_secure(session) for t in
                                     session.scalars(select(Transaction)).all()),
            },
        }
        print(json.dumps(out, sort_keys=True))


def cmd_post(url, key):
    """Posts one more journal entry for the entity, through the library, so
    that a test can prove the application keeps writing after a restore
    (its ids and numbering still free)."""
    engine = engine_for(url)
    with get_session(engine) as session:
        match = [e for e in entities(session) if str(e.id) == key or e.name == key]
        if len(match) != 1:
            sys.exit(f"no single entity matches {key!r}")
        entity = session.entity = match[0]
        accounts = session.scalars(
            select(Account).filter(Account.entity_id == entity.id)
            .order_by(Account.account_code)).all()
        tx = post(session, entity, JournalEntry, "Posted after the restore",
                  d(12, 1), accounts[0], [("Adjustment", accounts[1], "1", 1, None)])
        session.commit()
        print(json.dumps({"posted": tx.id, "transaction_no": tx.transaction_no}))


def main(argv):
    if len(argv) < 3 or argv[1] not in ("make", "list", "report", "post") or \
            (argv[1] in ("report", "post") and len(argv) != 4) or \
            (argv[1] == "make" and argv[3:] not in ([], ["other"])):
        sys.exit(__doc__)
    if argv[1] == "make":
        cmd_make(argv[2], *argv[3:])
    elif argv[1] == "list":
        cmd_list(argv[2])
    elif argv[1] == "post":
        cmd_post(argv[2], argv[3])
    else:
        cmd_report(argv[2], argv[3])


if __name__ == "__main__":
    main(sys.argv)
