"""GnuCash itself, through its Python bindings, for ledgervault's tests.

    book.py create PATH            a new SQLite book with two accounts
    book.py write PATH SECONDS [STOP]
                                   commit balanced transactions in a tight
                                   loop for at most SECONDS, or until the file
                                   STOP exists; prints {"commits", "failures",
                                   "errors"}
    book.py check PATH             opens the book read-only; prints
                                   {"transactions", "balance", "errors"}

A failed commit is one GnuCash itself reports: a backend error after the
commit, or a "database is locked" / "commit" error in its log.
"""
import json
import os
import sys
import time

from gnucash import Account, GncNumeric, Session, SessionOpenMode, Split, Transaction
import gnucash.gnucash_core_c as c

mode, path = sys.argv[1], sys.argv[2]
uri = "sqlite3://" + path


def no_error(s):
    errs = s.pop_all_errors()
    return errs == (), errs


if mode == "create":
    s = Session(uri, SessionOpenMode.SESSION_NEW_STORE)
    s.save()
    s.end()
    s.destroy()
    s = Session(uri, SessionOpenMode.SESSION_NORMAL_OPEN)
    book = s.book
    root = book.get_root_account()
    usd = book.get_table().lookup("CURRENCY", "USD")
    for name, kind in (("Cash", c.ACCT_TYPE_BANK), ("Sales", c.ACCT_TYPE_INCOME)):
        a = Account(book)
        a.BeginEdit()
        a.SetName(name)
        a.SetType(kind)
        a.SetCommodity(usd)
        root.append_child(a)
        a.CommitEdit()
    s.end()
    s.destroy()
    print(json.dumps({"created": path}))
elif mode == "write":
    seconds = float(sys.argv[3])
    stop = sys.argv[4] if len(sys.argv) > 4 else None
    # The create step's session may leave GnuCash's own lock row behind.
    s = Session(uri, SessionOpenMode.SESSION_BREAK_LOCK)
    book = s.book
    root = book.get_root_account()
    usd = book.get_table().lookup("CURRENCY", "USD")
    cash = root.lookup_by_name("Cash")
    sales = root.lookup_by_name("Sales")
    commits = failures = 0
    errors = []
    start = time.time()
    while time.time() - start < seconds and not (stop and os.path.exists(stop)):
        tx = Transaction(book)
        tx.BeginEdit()
        tx.SetCurrency(usd)
        tx.SetDescription("invoice %d" % commits)
        for account, cents in ((cash, 1250), (sales, -1250)):
            sp = Split(book)
            sp.SetParent(tx)
            sp.SetAccount(account)
            sp.SetValue(GncNumeric(cents, 100))
            sp.SetAmount(GncNumeric(cents, 100))
        tx.CommitEdit()
        ok, err = no_error(s)
        if ok:
            commits += 1
        else:
            failures += 1
            errors.append(str(err))
    s.end()
    print(json.dumps({"commits": commits, "failures": failures, "errors": errors[:5]}))
elif mode == "check":
    s = Session(uri, SessionOpenMode.SESSION_READ_ONLY)
    ok, err = no_error(s)
    book = s.book
    root = book.get_root_account()
    balance = 0
    for a in root.get_descendants():
        balance += a.GetBalance().num() * 100 // max(a.GetBalance().denom(), 1)
    n = sum(len(a.GetSplitList()) for a in root.get_descendants()) // 2
    s.end()
    print(json.dumps({"transactions": n, "balance": balance, "opened": ok, "error": str(err)}))
