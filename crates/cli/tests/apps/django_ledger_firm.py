#!/usr/bin/env python3
"""A multi-entity accounting firm database built with django-ledger (PyPI).

Django is configured in-process; the schema comes from django-ledger's own
migrations and every row is written through its models and their methods
(EntityModel.create_entity, populate_default_coa, create_vendor/customer,
create_bill/create_invoice with ItemTransactionModels and their
mark_as_review/approved/paid state machine, deposit_capital, commit_txs).
Nothing is inserted by hand.

    django_ledger_firm.py migrate DBURL               create the schema
    django_ledger_firm.py make    DBURL NAME [NAME..] one entity per NAME
                                                      (runs migrate first)
    django_ledger_firm.py list    DBURL               [{"name":..,"slug":..}]
    django_ledger_firm.py report  DBURL NAME|SLUG     one JSON line of the
                                                      application's own reports
    django_ledger_firm.py post    DBURL NAME|SLUG     one more posted journal entry
    django_ledger_firm.py trees   DBURL               django-treebeard's find_problems
                                                      per tree, and accounts whose tree
                                                      parent is in another chart
DBURL: sqlite:////abs/path/firm.db or postgresql://user[:pass]@host:port/db

Deterministic: every figure, name, code, document number and even the random
suffixes of the entity, unit and chart-of-accounts slugs derive from a seed
made from the entity NAME, and all dates are fixed in 2024 (the books are
closed for June 2024; `post` books on 2024-12-30). So the same NAME made in
two databases gets the same slugs. Reports key accounts by code, role and
balance type, never by uuid; uuids and created/updated timestamps differ on
every run. SQLite and PostgreSQL give byte-identical reports.

Needs the venv made by (Python 3.11; Django 6 needs 3.12):
    python3 -m venv target/venv-django
    target/venv-django/bin/pip install django-ledger==0.8.5 Django==5.2.20 \
        django-treebeard==7.0.3 Faker==40.63.0 fpdf2==2.8.9 Markdown==3.11.4 \
        ofxtools==1.1.1 pillow==13.0.0 asgiref==3.13.0 sqlparse==0.6.1 \
        defusedxml==0.7.1 fonttools==4.69.1 psycopg2-binary==2.9.13
"""
import json
import random
import sys
import zlib
from datetime import date, datetime, timezone
from decimal import Decimal
from urllib.parse import unquote, urlparse

import django
from django.conf import settings

YEAR = 2024
START = date(YEAR, 1, 1)
END = date(YEAR, 12, 31)
ADMIN = "admin"
CENT = Decimal("0.01")


def db_settings(url):
    if url.startswith("sqlite:///"):
        # sqlite:////abs/path -> /abs/path ; sqlite:///rel/path -> rel/path
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": url[len("sqlite:///"):]}
    u = urlparse(url)
    if u.scheme in ("postgresql", "postgres"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": u.path.lstrip("/"),
            "USER": unquote(u.username or ""),
            "PASSWORD": unquote(u.password or ""),
            "HOST": u.hostname or "",
            "PORT": str(u.port or ""),
        }
    raise SystemExit(f"unsupported DBURL {url!r}")


def setup(url):
    settings.configure(
        DEBUG=False,
        SECRET_KEY="ledgervault-test-fixture",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django_ledger",
        ],
        DATABASES={"default": db_settings(url)},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
        TIME_ZONE="UTC",
        CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}},
        LOGGING_CONFIG=None,
    )
    import logging
    import warnings

    warnings.simplefilter("ignore")
    django.setup()

    logging.disable(logging.CRITICAL)


def dt(month, day, hour=12):
    return datetime(YEAR, month, day, hour, 0, tzinfo=timezone.utc)


def money(rng, lo, hi):
    return Decimal(rng.randint(lo * 100, hi * 100)) * CENT


def seed_for(name):
    return zlib.crc32(name.encode("utf-8"))


# ---------------------------------------------------------------- migrate
def cmd_migrate():
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


# ---------------------------------------------------------------- make
VENDORS = ["Northwind Supplies", "Harbor Utilities", "Pinecrest Leasing", "Summit Office Co",
           "Redline Logistics", "Bluegate Software"]
CUSTOMERS = ["Orion Retail", "Maple Holdings", "Quartz Dental", "Vega Motors", "Lumen Studio",
             "Atlas Freight", "Coral Hotels"]
EXPENSES = [("Office supplies", "M"), ("Electricity", "O"), ("Equipment rental", "E"),
            ("Courier services", "L"), ("Software licence", "O")]
SERVICES = ["Consulting hour", "Bookkeeping package", "Installation", "Support plan", "Training day"]
UOMS = [("Unit", "unit"), ("Hour", "hr"), ("Month", "mo")]


def get_admin():
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user = User.objects.filter(username=ADMIN).first()
    if user is None:
        user = User.objects.create_user(username=ADMIN, email="admin@example.com", password="admin-pass-1")
    return user


def accounts_by_role(entity):
    out = {}
    for a in entity.get_coa_accounts(order_by=("role", "code")):
        out.setdefault(a.role, []).append(a)
    return out


def make_entity(name, admin):
    from django_ledger.io import roles as R
    from django_ledger.models import (BankAccountModel, BillModel, EntityModel, EntityUnitModel,
                                      EstimateModel, InvoiceModel, ItemModel,
                                      ItemTransactionModel)

    rng = random.Random(seed_for(name))
    # EntityModel.generate_slug_from_name and EntityUnitModel use the global
    # `random` for slug suffixes and prefixes: seed it for reproducible slugs.
    random.seed(seed_for(name))

    entity = EntityModel.create_entity(name=name, use_accrual_method=bool(seed_for(name) % 2),
                                       admin=admin, fy_start_month=1)
    entity.create_chart_of_accounts(assign_as_default=True, commit=True,
                                    coa_name=f"{name} CoA")
    entity.populate_default_coa(activate_accounts=True)
    acc = accounts_by_role(entity)
    cash = acc[R.ASSET_CA_CASH][0]

    # units of measure, entity units (treebeard roots), bank account
    uoms = [entity.create_uom(name=n, unit_abbr=a) for n, a in UOMS]
    units = []
    for i, unit_name in enumerate(["Head Office", "Field Team"]):
        unit = EntityUnitModel(name=f"{name} {unit_name}", entity=entity,
                               document_prefix=f"U{i}{name[0].upper()}")
        unit.clean()
        units.append(EntityUnitModel.objects.add_root(instance=unit))
    entity.create_bank_account(name=f"{name} Checking", account_type=BankAccountModel.ACCOUNT_CHECKING,
                               active=True, account_model=cash,
                               bank_account_model_kwargs={"routing_number": f"{rng.randint(0, 10**9 - 1):09d}",
                                                          "account_number": f"{rng.randint(0, 10**9 - 1):09d}"})

    # parties
    vendors = [entity.create_vendor({"vendor_name": v, "city": "Springfield", "country": "US",
                                     "email": f"ap@{v.split()[0].lower()}.example", "active": True,
                                     "hidden": False})
               for v in rng.sample(VENDORS, rng.randint(3, 4))]
    customers = [entity.create_customer({"customer_name": c, "city": "Shelbyville", "country": "US",
                                         "email": f"ar@{c.split()[0].lower()}.example", "active": True,
                                         "hidden": False})
                 for c in rng.sample(CUSTOMERS, rng.randint(3, 5))]

    # items
    expenses = [entity.create_item_expense(name=n, expense_type=t, uom_model=uoms[0],
                                           expense_account=rng.choice(acc[R.EXPENSE_OPERATIONAL]))
                for n, t in EXPENSES]
    # EntityModel.create_item_service() fails on the default CoA (its
    # `.get()` of the COGS account finds 6 role-default accounts), so the
    # service items are built the way django-ledger's own EntityDataGenerator
    # builds them: ItemModel(...) + full_clean() + save().
    services = []
    for n in SERVICES:
        item = ItemModel(name=n, uom=uoms[1], item_role=ItemModel.ITEM_ROLE_SERVICE, entity=entity,
                         for_inventory=False, is_product_or_service=True,
                         earnings_account=acc[R.INCOME_OPERATIONAL][0],
                         cogs_account=acc[R.COGS_REGULAR][0], additional_info={})
        item.full_clean()
        item.save()
        services.append(item)

    # capital
    entity.deposit_capital(amount=money(rng, 40000, 90000), cash_account=cash,
                           capital_account=acc[R.EQUITY_CAPITAL][0], description="Owner capital",
                           ledger_posted=True, je_timestamp=dt(1, 2), je_posted=True)

    # bills: draft -> review -> approved -> (paid | left open)
    for i in range(rng.randint(4, 6)):
        month = 1 + i * 2
        bill = entity.create_bill(vendor_model=vendors[i % len(vendors)], terms=BillModel.TERMS_NET_30,
                                  date_draft=dt(month, 3), cash_account=cash,
                                  prepaid_account=acc[R.ASSET_CA_PREPAID][0],
                                  payable_account=acc[R.LIABILITY_CL_ACC_PAYABLE][0],
                                  additional_info={}, commit=True)
        lines = [ItemTransactionModel(bill_model=bill, item_model=rng.choice(expenses),
                                      quantity=Decimal(rng.randint(1, 12)),
                                      unit_cost=money(rng, 20, 400),
                                      entity_unit=units[j % 2] if j < 2 else None)
                 for j in range(rng.randint(2, 4))]
        for line in lines:
            line.full_clean()
        bill.update_amount_due(itemtxs_qs=lines)
        bill.itemtransactionmodel_set.bulk_create(lines)
        bill.full_clean()
        bill.save()
        bill.mark_as_review(commit=True, date_in_review=dt(month, 4))
        bill.mark_as_approved(user_model=admin, entity_slug=entity.slug, commit=True,
                              date_approved=dt(month, 5))
        if i % 3 != 2:
            bill.mark_as_paid(user_model=admin, entity_slug=entity.slug, commit=True,
                              date_paid=dt(month, 25))

    # invoices: draft -> review -> approved -> (paid | left open)
    for i in range(rng.randint(4, 7)):
        month = 1 + (i * 5) % 11
        inv = entity.create_invoice(customer_model=customers[i % len(customers)],
                                    terms=InvoiceModel.TERMS_NET_30, cash_account=cash,
                                    prepaid_account=acc[R.ASSET_CA_RECEIVABLES][0],
                                    payable_account=acc[R.LIABILITY_CL_DEFERRED_REVENUE][0],
                                    date_draft=dt(month, 8), additional_info={}, commit=True)
        lines = [ItemTransactionModel(invoice_model=inv, item_model=rng.choice(services),
                                      quantity=Decimal(rng.randint(1, 20)),
                                      unit_cost=money(rng, 50, 900),
                                      entity_unit=units[1] if j == 0 else None)
                 for j in range(rng.randint(2, 4))]
        for line in lines:
            line.full_clean()
        lines = inv.itemtransactionmodel_set.bulk_create(lines)
        inv.update_amount_due(itemtxs_qs=lines)
        inv.full_clean()
        inv.save()
        inv.mark_as_review(commit=True, date_in_review=dt(month, 9))
        inv.mark_as_approved(entity_slug=entity.slug, user_model=admin, commit=True,
                             date_approved=dt(month, 10))
        if i % 4 != 3:
            inv.mark_as_paid(entity_slug=entity.slug, user_model=admin, commit=True,
                             date_paid=dt(month, 28))

    # general journal: rent every other month (booked to a unit), a short-term
    # loan and its repayment, equipment and its depreciation. Each JE's roles
    # must map to one cash-flow activity (JournalEntryModel.verify), which is
    # why the loan is a short-term note (lia_ltl_notes is both investing and
    # financing and is refused).
    ledger = entity.create_ledger(name=f"{name} general journal", posted=True)
    rent = money(rng, 800, 3000)
    expense_acc = acc[R.EXPENSE_OPERATIONAL]
    for month in range(1, 13, 2):
        post_je(entity, ledger, dt(month, 15), f"Rent {YEAR}-{month:02d}",
                [(expense_acc[0], "debit", rent), (cash, "credit", rent)], unit=units[0])
    loan = money(rng, 10000, 30000)
    post_je(entity, ledger, dt(3, 1), "Bank loan received",
            [(cash, "debit", loan), (acc[R.LIABILITY_CL_ST_NOTES_PAYABLE][0], "credit", loan)])
    equipment = money(rng, 5000, 15000)
    post_je(entity, ledger, dt(3, 2), "Equipment purchase",
            [(acc[R.ASSET_PPE_EQUIPMENT][0], "debit", equipment), (cash, "credit", equipment)])
    dep = (equipment / 10).quantize(CENT)
    post_je(entity, ledger, dt(12, 31), "Depreciation",
            [(acc[R.EXPENSE_DEPRECIATION][0], "debit", dep),
             (acc[R.ASSET_PPE_EQUIPMENT_ACCUM_DEPRECIATION][0], "credit", dep)])
    repay = (loan / 4).quantize(CENT)
    interest = (loan * Decimal("0.05")).quantize(CENT)
    post_je(entity, ledger, dt(9, 1), "Loan repayment with interest",
            [(acc[R.LIABILITY_CL_ST_NOTES_PAYABLE][0], "debit", repay),
             (acc[R.EXPENSE_INTEREST_ST][0], "debit", interest),
             (cash, "credit", repay + interest)])

    # a customer estimate and a purchase order (item transactions outside the ledger)
    # (EstimateModel.configure(), used by EntityModel.create_estimate(), never
    # stores its date_draft argument, so the estimate would be dated and
    # numbered in today's year: set the date on the instance first.)
    est = EstimateModel(terms=EstimateModel.CONTRACT_TERMS_FIXED, date_draft=date(YEAR, 10, 1))
    est.configure(entity_slug=entity, customer_model=customers[0], estimate_title=f"{name} estimate",
                  date_draft=date(YEAR, 10, 1), commit=True)
    lines = [ItemTransactionModel(ce_model=est, item_model=services[j], ce_quantity=Decimal(rng.randint(2, 9)),
                                  ce_unit_cost_estimate=money(rng, 30, 60),
                                  ce_unit_revenue_estimate=money(rng, 80, 150))
             for j in range(3)]
    for line in lines:
        line.full_clean()
    est.full_clean()
    est.update_state(itemtxs_qs=lines)
    est.save()
    est.itemtransactionmodel_set.bulk_create(lines)
    est.mark_as_review(commit=True, date_in_review=dt(10, 2))
    est.mark_as_approved(commit=True, date_approved=dt(10, 3))

    po = entity.create_purchase_order(date_draft=dt(11, 1), po_title=f"{name} purchase order")
    lines = [ItemTransactionModel(po_model=po, item_model=expenses[j], po_quantity=Decimal(rng.randint(1, 5)),
                                  po_unit_cost=money(rng, 100, 300)) for j in range(2)]
    for line in lines:
        line.full_clean()
    lines = po.itemtransactionmodel_set.bulk_create(lines)
    po.update_state(itemtxs_qs=lines)
    po.full_clean()
    po.save()
    po.mark_as_review(commit=True, date_in_review=dt(11, 2))

    # close the books for June (ClosingEntryModel + ClosingEntryTransactionModels)
    entity.close_books_for_month(year=YEAR, month=6, post_closing_entry=True)
    return entity


def post_je(entity, ledger, when, desc, lines, unit=None):
    txs = [{"account": a, "tx_type": t, "amount": amt, "description": desc} for a, t, amt in lines]
    je, _ = entity.commit_txs(je_timestamp=when, je_txs=txs, je_posted=True,
                              je_ledger_model=ledger, je_unit_model=unit, je_desc=desc)
    return je


def row_counts():
    from django.apps import apps

    out = {}
    for m in apps.get_models(include_auto_created=True):
        out[m._meta.db_table] = m._default_manager.count()
    return {k: v for k, v in sorted(out.items()) if v}


def cmd_make(names):
    cmd_migrate()
    admin = get_admin()
    made = []
    from django_ledger.models import EntityModel

    taken = [n for n in names if EntityModel.objects.filter(name=n).exists()]
    if taken or len(set(names)) != len(names):
        raise SystemExit(f"entity names must be new and distinct: {taken or names}")
    for name in names:
        # not in one transaction: django-ledger numbers documents in durable
        # atomic blocks of its own (EntityStateModel sequences)
        e = make_entity(name, admin)
        made.append({"name": e.name, "slug": e.slug, "uuid": str(e.uuid)})
    return {"made": made, "rows": row_counts()}


# ---------------------------------------------------------------- report / post
def find_entity(key):
    from django_ledger.models import EntityModel

    qs = EntityModel.objects.filter(name=key)
    if not qs.exists():
        qs = EntityModel.objects.filter(slug=key)
    return qs.get()


def num(x):
    return str(Decimal(x).quantize(CENT)) if x is not None else None


def cmd_list():
    from django_ledger.models import EntityModel

    return [{"name": e.name, "slug": e.slug} for e in EntityModel.objects.order_by("name")]


def cmd_report(key):
    from django_ledger.models import (BillModel, InvoiceModel, JournalEntryModel, TransactionModel)

    e = find_entity(key)
    # trial balance: django-ledger's IO digest of every posted transaction up
    # to END, straight from the transactions (closing entries not used)
    # signs=False: each balance on its account's own (debit/credit) side
    raw = e.digest(to_date=END, signs=False, use_closing_entry=False)
    tb, tb_totals = {}, {"debit": Decimal(0), "credit": Decimal(0)}
    for a in sorted(raw.get_io_data()["accounts"], key=lambda a: (a["code"], a["role"])):
        k = f"{a['code']} {a['role']} {a['balance_type']}"
        tb[k] = num(Decimal(tb.get(k) or 0) + a["balance"])
        tb_totals[a["balance_type"]] += a["balance"]
    digest = e.digest(to_date=END, process_groups=True, use_closing_entry=False)
    groups = {g: num(v) for g, v in sorted(digest.get_io_data()["group_balance"].items())}

    # the statements as the application computes them (closing entries used
    # where django-ledger's settings say so: DJANGO_LEDGER_USE_CLOSING_ENTRIES)
    bs = e.digest_balance_sheet(to_date=END).get_balance_sheet_data()
    bs_out = {s: num(b["total_balance"]) for s, b in sorted(bs.items())
              if isinstance(b, dict) and "total_balance" in b}
    ist = e.digest_income_statement(from_date=START, to_date=END).get_income_statement_data()
    is_out = {}
    for section, body in sorted(ist.items()):
        if isinstance(body, dict):
            for k, v in sorted(body.items()):
                if k.startswith(("total", "net")):
                    is_out[f"{section}.{k}"] = num(v)
        elif section.startswith(("net", "total")):
            is_out[section] = num(body)

    closing = {}
    for ce in e.closingentrymodel_set.all():
        for t in ce.closingentrytransactionmodel_set.select_related("account_model", "unit_model"):
            k = f"{ce.closing_date} {t.account_model.code} {t.account_model.role} {t.tx_type}"
            if t.unit_model_id:
                k += f" {t.unit_model.name}"
            closing[k] = num(Decimal(closing.get(k) or 0) + t.balance)

    bills = BillModel.objects.filter(ledger__entity=e)
    invoices = InvoiceModel.objects.filter(ledger__entity=e)
    return {
        "entity": e.name,
        "accrual": e.accrual_method,
        "trial_balance": tb,
        "trial_balance_totals": {k: num(v) for k, v in tb_totals.items()},
        "closing_entries": dict(sorted(closing.items())),
        "estimates": sorted((x.estimate_number, x.status, num(x.revenue_estimate))
                            for x in e.estimatemodel_set.all()),
        "purchase_orders": sorted((x.po_number, x.po_status, num(x.po_amount))
                                  for x in e.purchaseordermodel_set.all()),
        "groups": groups,
        "balance_sheet": bs_out,
        "income_statement": is_out,
        "bills": sorted((b.bill_number, b.bill_status, num(b.amount_due), num(b.amount_paid)) for b in bills),
        "invoices": sorted((i.invoice_number, i.invoice_status, num(i.amount_due), num(i.amount_paid))
                           for i in invoices),
        "journal_entries": JournalEntryModel.objects.filter(ledger__entity=e).count(),
        "posted_journal_entries": JournalEntryModel.objects.filter(ledger__entity=e, posted=True).count(),
        "transactions": TransactionModel.objects.filter(journal_entry__ledger__entity=e).count(),
        "vendors": sorted(v.vendor_number + " " + v.vendor_name for v in e.vendormodel_set.all()),
        "customers": sorted(c.customer_number + " " + c.customer_name for c in e.customermodel_set.all()),
    }


def cmd_post(key):
    from django_ledger.io import roles as R

    e = find_entity(key)
    acc = accounts_by_role(e)
    ledger = e.create_ledger(name="Post-restore adjustment", posted=True)
    amt = Decimal("123.45")
    je = post_je(e, ledger, dt(12, 30), "Post-restore adjustment",
                 [(acc[R.EXPENSE_OPERATIONAL][0], "debit", amt), (acc[R.ASSET_CA_CASH][0], "credit", amt)])
    return {"posted": je.je_number, "amount": str(amt)}


def cmd_trees():
    """django-treebeard's own consistency check of the three trees, and
    whether every account's tree parent is in the same chart of accounts."""
    from django_ledger.models import AccountModel, EntityModel, EntityUnitModel

    out = {}
    for model in (EntityModel, EntityUnitModel, AccountModel):
        evil, bad_step, orphans, wrong_depth, wrong_numchild = model.find_problems()
        out[model.__name__] = {
            "evil_chars": len(evil), "bad_steplen": len(bad_step), "orphans": len(orphans),
            "wrong_depth": len(wrong_depth), "wrong_numchild": len(wrong_numchild),
        }
    coa_of = dict(AccountModel.objects.values_list("path", "coa_model_id"))
    steplen = AccountModel.steplen
    out["accounts_under_another_chart"] = sum(
        1 for path, coa in coa_of.items()
        if len(path) > steplen and coa_of.get(path[:-steplen]) != coa
    )
    return out


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    cmd, url, rest = argv[1], argv[2], argv[3:]
    setup(url)
    if cmd == "migrate":
        cmd_migrate()
        out = {"migrated": True}
    elif cmd == "make":
        if not rest:
            raise SystemExit("make DBURL NAME [NAME...]")
        out = cmd_make(rest)
    elif cmd == "list":
        out = cmd_list()
    elif cmd == "report":
        out = cmd_report(rest[0])
    elif cmd == "post":
        out = cmd_post(rest[0])
    elif cmd == "trees":
        out = cmd_trees()
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out, sort_keys=True, default=str))


if __name__ == "__main__":
    main(sys.argv)
