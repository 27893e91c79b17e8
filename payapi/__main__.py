"""python -m payapi migrate | token USER_ID [--phone P] [--ttl S] | worker [--once]
| withdrawals [list|show ID|retry ID|fail ID --reason R] | notifications [list|resend ID] | operator add|list|disable
| books check | reconcile [--date D] | dev | sandbox [pay|transfer|refund|fault|list ...]"""

import argparse
import json
import os
import sys

from payapi import startup
from payapi.domain.clock import iso
from payapi.infra.db import bind, open_database

MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")


def migrate(settings):
    from peewee_migrate import Router

    database = bind(open_database(settings.database_url))
    router = Router(database, migrate_dir=MIGRATIONS, ignore=["basemodel"])
    done = router.run()
    print(f"applied {len(done)} migration(s): {', '.join(done) or 'none pending'}")


def token(settings, args):
    from payapi.domain.ids import is_id
    from payapi.http.auth import Authenticator, usable_phone

    if not is_id(args.user_id):
        sys.exit("USER_ID must be 24 lowercase hex characters")
    if args.phone is not None and not usable_phone(args.phone):
        sys.exit("--phone must be 5-20 ASCII digits with an optional leading +")
    print(Authenticator(settings.auth_secrets).mint(args.user_id, phone=args.phone, ttl=args.ttl))


def worker(settings, args):
    from payapi import worker as worker_module
    from payapi.wsgi import gateway_from

    database = bind(open_database(settings.database_url))
    startup.check_tables("worker", settings, database)
    gateway = gateway_from(settings)
    if args.once:
        print(json.dumps(worker_module.run_once(settings, gateway)))
    else:
        worker_module.run_forever(settings, gateway, args.interval)


def refused(error):
    """An operator command the domain refused: its message, exit status 1."""
    print(error.msg, file=sys.stderr)
    sys.exit(1)


def print_audited(record, entry):
    print(
        json.dumps(
            {
                "audit_id": entry.audit_id,
                "action": entry.action,
                "target": entry.target,
                "before": json.loads(entry.before),
                "after": json.loads(entry.after),
            },
            ensure_ascii=False,
        )
    )


def withdrawals_command(settings, args):
    from payapi.backoffice import actions, operators
    from payapi.contract.errors import ApiError
    from payapi.infra.models import Withdrawal
    from payapi.money.withdrawals import PENDING, PROCESSING
    from payapi.wsgi import gateway_from

    bind(open_database(settings.database_url))
    if args.action in ("retry", "fail"):
        if not args.id:
            sys.exit(f"usage: python -m payapi withdrawals {args.action} ID --reason TEXT")
        if args.action == "fail" and not (args.reason or "").strip():
            sys.exit("withdrawals fail needs --reason (kept in the audit trail)")
        act = actions.fail_withdrawal if args.action == "fail" else actions.retry_withdrawal
        try:
            print_audited(
                *act(gateway_from(settings), args.id, operators.cli_identity(), (args.reason or "").strip()[:255])
            )
        except ApiError as error:
            refused(error)
        return
    if args.action == "show":
        w = Withdrawal.get_or_none(Withdrawal.withdraw_id == args.id)
        if w is None:
            sys.exit(f"no withdrawal {args.id}")
        row = {k: getattr(w, k) for k in w.__data__}
        for k in ("created_at", "updated_at", "lease_until", "retry_after", "lookup_from"):
            row[k] = iso(row[k]) if row[k] else None
        row["transfer"] = json.loads(w.transfer) if w.transfer else None
        print(json.dumps(row, ensure_ascii=False, indent=2))
        return
    in_flight = Withdrawal.select().where(Withdrawal.status.in_((PENDING, PROCESSING))).order_by(Withdrawal.created_at)
    print(f"{'withdraw_id':24}  {'status':10}  {'amount':>10}  {'attempts':>8}  {'created':24}  last_error")
    for w in in_flight:
        print(
            f"{w.withdraw_id:24}  {w.status:10}  {w.amount:>10}  {w.attempts:>8}  {iso(w.created_at):24}  {w.last_error}"
        )


def notifications_command(settings, args):
    from payapi.backoffice import actions, oncall, operators
    from payapi.contract.errors import ApiError

    bind(open_database(settings.database_url))
    if args.action == "resend":
        if not args.id:
            sys.exit("usage: python -m payapi notifications resend ID [--reason TEXT]")
        try:
            print_audited(
                *actions.resend_notification(args.id, operators.cli_identity(), (args.reason or "").strip()[:255])
            )
        except ApiError as error:
            refused(error)
        return
    print(f"{'message_id':28}  {'type':20}  {'subject':24}  {'attempts':>8}  {'failed at':24}  last_error")
    for n in oncall.failed_notifications():
        print(
            f"{n.message_id:28}  {n.type:20}  {n.subject_id:24}  {n.attempts:>8}  {iso(n.updated_at):24}  "
            f"{n.last_status or ''} {n.last_error}"
        )


def operator_command(settings, args):
    """operator add NAME (the password: one line on standard input) | list | disable NAME."""
    from payapi.backoffice import operators
    from payapi.contract.errors import ApiError

    bind(open_database(settings.database_url))
    try:
        if args.action == "add":
            line = sys.stdin.readline()
            password = line[:-1] if line.endswith("\n") else line
            operator = operators.add(
                args.name or "", password.removesuffix("\r"), settings.bcrypt_rounds, reset=args.reset
            )
            print(
                f"operator {operator.name} {'has a new password' if args.reset else 'added'} ({operator.operator_id})"
            )
        elif args.action == "disable":
            if not operators.disable(args.name or ""):
                sys.exit(f"no operator {args.name}")
            print(f"operator {args.name} disabled; their sessions have ended")
        else:
            for o in operators.all_operators():
                state = f"disabled {iso(o.disabled_at)}" if o.disabled_at else "active"
                print(f"{o.name:24}  {o.operator_id}  {state:34}  created {iso(o.created_at)}")
    except ApiError as error:
        refused(error)


def books_command(settings, args):
    """books check: exit 1 (and say why) if any entry or the book is unbalanced, or a wallet disagrees."""
    from payapi.money import books

    bind(open_database(settings.database_url))
    problems = books.check()
    totals = books.trial_balance()
    for account in totals["accounts"]:
        print(f"{account['account']:48}  debits {account['debits']:>14}  credits {account['credits']:>14}")
    print(f"{'total':48}  debits {totals['debits']:>14}  credits {totals['credits']:>14}")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


def iso_date(text):
    import datetime

    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def reconcile_command(settings, args):
    """reconcile [--date D]: exit 0 when nothing remains different, 1 otherwise."""
    from payapi.infra import logs
    from payapi.money import reconciliation
    from payapi.wsgi import gateway_from

    logs.configure()
    bind(open_database(settings.database_url))
    date = args.date or reconciliation.yesterday(settings.tz)
    row = reconciliation.reconcile(settings, gateway_from(settings), date)
    healed, differences = json.loads(row.healed), json.loads(row.differences)
    print(
        f"reconciliation {row.reconciliation_id} of {row.date}: {row.status} "
        f"({len(healed)} healed, {len(differences)} different)"
    )
    for item in healed:
        print("healed:", json.dumps(item, ensure_ascii=False))
    for item in differences:
        print("different:", json.dumps(item, ensure_ascii=False))
    sys.exit(1 if differences else 0)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["dev"] or argv[:1] == ["sandbox"]:
        # Development tools with their own arguments, imported only when asked for: the service's
        # own commands never load them. They read no payapi settings (dev sets its children's).
        import importlib

        if argv[0] == "sandbox":  # its log lines are JSON too; the sandbox itself imports nothing of payapi
            from payapi.infra import logs

            logs.configure()
        tool = importlib.import_module("payapi.dev" if argv[0] == "dev" else "payapi.sandbox.cli")
        sys.exit(tool.main(argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m payapi")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply migrations/ (safe to run twice)")
    p = sub.add_parser("token", help="print an auth token for development and tests")
    p.add_argument("user_id")
    p.add_argument("--phone")
    p.add_argument("--ttl", type=int, default=3600)
    p = sub.add_parser("worker", help="payouts and reconciliation")
    p.add_argument("--once", action="store_true")
    p.add_argument("--interval", type=float, default=60.0)
    p = sub.add_parser("withdrawals", help="withdrawals in flight; retry one now, or fail it (audited)")
    p.add_argument("action", nargs="?", choices=["list", "show", "retry", "fail"], default="list")
    p.add_argument("id", nargs="?")
    p.add_argument("--reason", help="why (kept in the audit trail); required to fail")
    p = sub.add_parser("notifications", help="failed notifications to the order service; resend one (audited)")
    p.add_argument("action", nargs="?", choices=["list", "resend"], default="list")
    p.add_argument("id", nargs="?")
    p.add_argument("--reason", help="why (kept in the audit trail)")
    p = sub.add_parser("operator", help="operators of the console: add NAME (password on stdin), list, disable NAME")
    p.add_argument("action", choices=["add", "list", "disable"])
    p.add_argument("name", nargs="?")
    p.add_argument(
        "--reset",
        action="store_true",
        help="add: give an existing operator this password instead (enables it, ends its sessions)",
    )
    p = sub.add_parser("books", help="the trial balance; exit 1 if the books do not balance")
    p.add_argument("action", choices=["check"])
    p = sub.add_parser("reconcile", help="compare a day with Ping++ (default: yesterday in TIMEZONE)")
    p.add_argument("--date", type=iso_date)
    sub.add_parser("dev", help="sandbox, web app and worker on this machine, for a newcomer (Ctrl-C stops)")
    sub.add_parser("sandbox", help="a local Ping++: serve it, or pay, settle and break things in a running one")
    args = parser.parse_args(argv)

    # Each command checks what it uses (startup.py); the serving ones check everything.
    if args.command == "migrate":
        migrate(startup.settings_for("migrate", startup.MIGRATE))
    elif args.command == "token":
        token(startup.settings_for("token", startup.TOKEN), args)
    elif args.command == "worker":
        worker(startup.settings_for("worker", startup.SERVE), args)
    elif args.command == "withdrawals":
        needs = startup.GATEWAY if args.action in ("retry", "fail") else startup.DATABASE
        withdrawals_command(startup.settings_for("withdrawals", needs), args)
    elif args.command == "notifications":
        notifications_command(startup.settings_for("notifications", startup.DATABASE), args)
    elif args.command == "operator":
        operator_command(startup.settings_for("operator", startup.DATABASE), args)
    elif args.command == "books":
        books_command(startup.settings_for("books", startup.DATABASE), args)
    elif args.command == "reconcile":
        reconcile_command(startup.settings_for("reconcile", startup.SERVE), args)


if __name__ == "__main__":
    main()
