"""The sandbox's page at /_sandbox/: what Ping++ holds, with buttons. Plain HTML forms, no JavaScript."""

import datetime
import html

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; } code { font-size: 12px; }
form.inline { display: inline; margin: 0; } .msg { background: #fff6cc; padding: 6px 10px; }
.muted { color: #777; } fieldset { display: inline-block; margin-right: 1em; vertical-align: top; }
"""


def _e(value):
    return html.escape("" if value is None else str(value))


def _time(seconds):
    if not seconds:
        return ""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _button(action, label, **fields):
    hidden = "".join(f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields.items())
    return f'<form class="inline" method="post" action="{_e(action)}">{hidden}<button>{_e(label)}</button></form>'


def _table(headers, rows, empty):
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _yuan(fen):
    return f"{fen / 100:.2f}" if isinstance(fen, int) else _e(fen)


def render(sandbox, message=""):
    state = sandbox.ledger.snapshot()
    with sandbox.lock:
        events = list(reversed(sandbox.events))[:50]
        faults = list(sandbox.failures)
    settings = sandbox.settings()

    charge_rows = []
    for c in state["charges"]:
        actions = ""
        if not c["paid"]:
            if c["reversed"]:
                actions = _button(f"/_sandbox/charges/{c['id']}/pay", "pay even if reversed", even_if_reversed="1")
            else:
                actions = _button(f"/_sandbox/charges/{c['id']}/pay", "pay")
        status = "paid" if c["paid"] else "reversed" if c["reversed"] else "unpaid"
        if c["refunded"]:
            status += ", refunded"
        elif c["amount_refunded"]:
            status += f", {_yuan(c['amount_refunded'])} refunded"
        charge_rows.append(
            [
                f"<code>{_e(c['id'])}</code>",
                f"<code>{_e(c['order_no'])}</code>",
                _yuan(c["amount"]),
                _e(c["channel"]),
                _e(c["subject"]),
                _e(status),
                _e(_time(c["created"])),
                _e(_time(c["time_expire"])),
                actions,
            ]
        )
    refund_rows = []
    for r in state["refunds"]:
        actions = ""
        if r["status"] == "pending":
            actions = _button(f"/_sandbox/refunds/{r['id']}/succeeded", "succeed") + _button(
                f"/_sandbox/refunds/{r['id']}/failed", "fail"
            )
        refund_rows.append(
            [
                f"<code>{_e(r['id'])}</code>",
                f"<code>{_e(r['charge'])}</code>",
                f"<code>{_e(r['charge_order_no'])}</code>",
                _yuan(r["amount"]),
                _e(r["status"]),
                _e(r["description"]),
                _e(_time(r["created"])),
                actions,
            ]
        )
    transfer_rows = []
    for t in state["transfers"]:
        actions = ""
        if t["status"] in ("pending", "scheduled"):
            actions = _button(f"/_sandbox/transfers/{t['id']}/succeeded", "succeed") + _button(
                f"/_sandbox/transfers/{t['id']}/failed", "fail"
            )
        transfer_rows.append(
            [
                f"<code>{_e(t['id'])}</code>",
                f"<code>{_e(t['order_no'])}</code>",
                _yuan(t["amount"]),
                _e(t["recipient"]),
                _e((t.get("extra") or {}).get("recipient_name")),
                _e(t["status"]),
                _e(_time(t["created"])),
                actions,
            ]
        )
    event_rows = []
    for ev in events:
        outcome = ev["last_status"] or ev["last_error"] or ""
        if ev["last_answer"]:
            outcome = f"{outcome} {ev['last_answer'][:120]}"
        again = (
            _button(f"/_sandbox/events/{ev['id']}/deliver", "deliver again")
            if settings["webhook_url"] and ev["status"] != "queued"
            else ""
        )
        event_rows.append(
            [
                f"<code>{_e(ev['id'])}</code>",
                _e(ev["type"]),
                f"<code>{_e(ev['object_id'])}</code>",
                _e(ev["status"]),
                _e(ev["attempts"]),
                f"<code>{_e(outcome)}</code>",
                again,
            ]
        )

    def option(name, value, current):
        return f'<option value="{_e(value)}"{" selected" if value == current else ""}>{_e(value)}</option>'

    settings_form = (
        '<form method="post" action="/_sandbox/settings"><fieldset><legend>settings</legend>'
        'new transfers: <select name="transfer_status">'
        + "".join(option("transfer_status", s, settings["transfer_status"]) for s in ("pending", "paid", "failed"))
        + '</select> new refunds: <select name="refund_status">'
        + "".join(option("refund_status", s, settings["refund_status"]) for s in ("pending", "succeeded"))
        + '</select><br>webhook URL: <input name="webhook_url" size="40" value="'
        + _e(settings["webhook_url"] or "")
        + '">'
        + ' deliver automatically: <select name="auto_deliver">'
        + option("auto_deliver", "yes", "yes" if settings["auto_deliver"] else "no")
        + option("auto_deliver", "no", "yes" if settings["auto_deliver"] else "no")
        + "</select> <button>save</button></fieldset></form>"
    )
    faults_form = (
        '<form method="post" action="/_sandbox/faults"><fieldset><legend>fault injection: the next API calls</legend>'
        '<select name="kind"><option value="fail">fail (HTTP 500)</option><option value="hang">hang, then 504</option>'
        '<option value="lose">carry out, lose the answer (504)</option></select>'
        ' times <input name="times" value="1" size="3"> seconds (hang/lose) <input name="seconds" value="10" size="4">'
        f' <button>add</button><br><span class="muted">waiting: {_e(", ".join(f["kind"] for f in faults) or "none")}</span>'
        "</fieldset></form>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ping++ sandbox</title><style>{STYLE}</style></head>
<body>
<h1>Ping++ and SMS sandbox <span class="muted">— {_e(sandbox.url)}</span></h1>
{f'<p class="msg">{_e(message)}</p>' if message else ""}
<p class="muted">Webhooks signed with this sandbox's key (<a href="/_sandbox/public_key.pem">public key</a>) go to
{_e(settings["webhook_url"] or "nowhere (no webhook URL)")}{"" if settings["auto_deliver"] else " — automatic delivery is off"}.
<a href="/_sandbox/">reload</a> · <a href="/_sandbox/state">state as JSON</a></p>
{settings_form}{faults_form}
<h2>Charges</h2>
{_table(["id", "order_no (pay_id)", "yuan", "channel", "subject", "status", "created (UTC)", "expires (UTC)", ""], charge_rows, "No charges yet.")}
<h2>Refunds</h2>
{_table(["id", "charge", "order_no", "yuan", "status", "description", "created (UTC)", ""], refund_rows, "No refunds yet.")}
<h2>Transfers</h2>
{_table(["id", "order_no (withdraw_id)", "yuan", "recipient", "name", "status", "created (UTC)", ""], transfer_rows, "No transfers yet.")}
<h2>Webhook events <span class="muted">(newest 50)</span></h2>
{_table(["id", "type", "object", "delivery", "attempts", "last answer", ""], event_rows, "No events yet.")}
{sandbox.sms.render()}
<form method="post" action="/_sandbox/reset"><button>forget everything</button></form>
</body></html>
"""
