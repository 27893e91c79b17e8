"""`python -m payapi sandbox`: serve the sandbox, or drive a running one.

    python -m payapi sandbox [--port 8001] [--webhook-url URL] [--key-file PEM] [--public-key-file PEM]
    python -m payapi sandbox pay CHARGE [--even-if-reversed]
    python -m payapi sandbox transfer TRANSFER succeeded|failed
    python -m payapi sandbox refund REFUND succeeded|failed
    python -m payapi sandbox fault fail|hang|lose [--times N] [--seconds S]
    python -m payapi sandbox list
    python -m payapi sandbox sms --last PHONE | --list [PHONE] | --fault limit|illegal|fail|hang [--provider P]

The driving commands find the sandbox through PINGPP_API_BASE (default http://127.0.0.1:8001).
CHARGE and TRANSFER may be the Ping++ id or the order_no (payapi's pay_id / withdraw_id).
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .core import OUTCOMES

DEFAULT_BASE = "http://127.0.0.1:8001"
WAIT_FOR_DELIVERY = 15.0  # seconds a command waits to report how the webhook delivery went


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m payapi sandbox", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.run(args)


def add_arguments(parser):
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (default 8001)")
    parser.add_argument("--webhook-url", help="deliver signed events here (payapi's /rest/pay/webhook)")
    parser.add_argument("--key-file", help="the sandbox's RSA private key (PEM): loaded, or made and saved there")
    parser.add_argument("--public-key-file", help="write the public key here (payapi's PINGPP_PUBLIC_KEY_PATH)")
    parser.add_argument(
        "--transfer-status",
        choices=("pending", "paid", "failed"),
        default="pending",
        help="status of new transfers (default pending: settle them with `sandbox transfer`)",
    )
    parser.add_argument(
        "--aliyun-key",
        action="append",
        default=[],
        metavar="ID:SECRET",
        help="an Alibaba Cloud AccessKey the SMS sandbox accepts (besides its development key)",
    )
    parser.add_argument(
        "--tencent-key",
        action="append",
        default=[],
        metavar="ID:SECRET",
        help="a Tencent Cloud SecretId:SecretKey the SMS sandbox accepts (besides its development key)",
    )
    parser.add_argument(
        "--refund-status",
        choices=("pending", "succeeded"),
        default="pending",
        help="status of new refunds (default pending: settle them with `sandbox refund`)",
    )
    sub = parser.add_subparsers(dest="sandbox_command", metavar="{pay,transfer,refund,fault,list,sms}")
    p = sub.add_parser("pay", help="pay a charge, as the payer would")
    p.add_argument("charge", help="charge id or order_no (pay_id)")
    p.add_argument(
        "--even-if-reversed",
        action="store_true",
        help="pay a reversed (closed) or expired charge anyway: a payment that slipped through",
    )
    p = sub.add_parser("transfer", help="a transfer succeeds or fails")
    p.add_argument("transfer", help="transfer id or order_no (withdraw_id)")
    p.add_argument("outcome", choices=OUTCOMES)
    p = sub.add_parser("refund", help="a pending refund succeeds or fails")
    p.add_argument("refund", help="refund id")
    p.add_argument("outcome", choices=OUTCOMES)
    p = sub.add_parser("fault", help="make the next Ping++ API calls fail, hang or lose their answer")
    p.add_argument("kind", choices=("fail", "hang", "lose"))
    p.add_argument("--times", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0, help="hang/lose: how long before the 504")
    p.add_argument("--status", type=int, default=500, help="fail: the HTTP status")
    sub.add_parser("list", help="charges, refunds and transfers the sandbox holds")
    p = sub.add_parser("sms", help="the SMS the sandbox received (Alibaba Cloud, Tencent Cloud), or SMS faults")
    p.add_argument("--last", metavar="PHONE", help="print the code of the last SMS to PHONE (alone, for scripts)")
    p.add_argument("--list", nargs="?", const="", metavar="PHONE", help="list the SMS (to PHONE), newest first")
    p.add_argument(
        "--fault",
        choices=("limit", "illegal", "fail", "hang"),
        help="the next SendSms calls answer a per-number limit, an illegal number, a 500, or hang",
    )
    p.add_argument("--provider", choices=("aliyun", "tencent", "any"), default="any")
    p.add_argument("--times", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0, help="hang: how long")
    parser.set_defaults(run=run)


def run(args):
    if args.sandbox_command is None:
        return serve(args)
    return {"pay": pay, "transfer": transfer, "refund": refund, "fault": fault, "list": listing, "sms": sms}[
        args.sandbox_command
    ](args)


# --- serving ------------------------------------------------------------------------------------


def serve(args):
    from .service import Sandbox

    sandbox = Sandbox(
        webhook_url=args.webhook_url,
        key_file=args.key_file,
        public_key_path=args.public_key_file,
        host=args.host,
        port=args.port,
        aliyun_keys=_keys(args.aliyun_key, "--aliyun-key"),
        tencent_keys=_keys(args.tencent_key, "--tencent-key"),
    )
    sandbox.transfer_status, sandbox.refund_status = args.transfer_status, args.refund_status
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        sandbox.start()
    except OSError as exc:
        sys.exit(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    print(f"Ping++ sandbox on {sandbox.url} (page: {sandbox.url}/_sandbox/)", flush=True)
    print(
        f"  SMS: Alibaba Cloud and Tencent Cloud SendSms at {sandbox.url} (ALIYUN_SMS_ENDPOINT, TENCENT_SMS_ENDPOINT)",
        flush=True,
    )
    print(
        f"  webhooks to {args.webhook_url or 'nowhere (no --webhook-url)'}; public key: "
        f"{args.public_key_file or sandbox.url + '/_sandbox/public_key.pem'}",
        flush=True,
    )
    stop.wait()
    sandbox.stop()
    return 0


def _keys(values, flag):
    keys = {}
    for value in values:
        key_id, _, secret = value.partition(":")
        if not key_id or not secret:
            sys.exit(f"{flag} takes ID:SECRET")
        keys[key_id] = secret
    return keys


# --- driving a running sandbox -------------------------------------------------------------------


class SandboxUnreachable(Exception):
    pass


def _base():
    return (os.environ.get("PINGPP_API_BASE") or DEFAULT_BASE).rstrip("/")


def call(method, path, body=None):
    """(status, JSON answer) from the running sandbox; proxies from the environment are ignored."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        _base() + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": {"message": f"HTTP {exc.code}"}}
    except (urllib.error.URLError, OSError) as exc:
        raise SandboxUnreachable(
            f"no sandbox at {_base()} ({getattr(exc, 'reason', exc)}); start it with `python -m payapi sandbox` "
            "or `python -m payapi dev`, or set PINGPP_API_BASE"
        ) from None


def _control(method, path, body=None):
    try:
        status, answer = call(method, path, body)
    except SandboxUnreachable as exc:
        print(exc, file=sys.stderr)
        return None
    if status != 200:
        print(f"sandbox: {answer.get('error', {}).get('message', answer)}", file=sys.stderr)
        return None
    return answer


def _report_events(events):
    """Print each event's delivery, waiting a little for its first attempt."""
    for event in events:
        deadline = time.monotonic() + WAIT_FOR_DELIVERY
        while event["status"] == "queued" and event["attempts"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            answer = _control("GET", f"/_sandbox/events/{urllib.parse.quote(event['id'])}")
            if answer is None:
                return
            event = answer["event"]
        if event["status"] == "recorded":
            print(
                f"{event['type']} {event['id']}: recorded, not delivered (the sandbox has no webhook URL "
                "or automatic delivery is off)"
            )
        elif event["attempts"] == 0:
            print(f"{event['type']} {event['id']}: waiting to be delivered to {event['url']}")
        else:
            outcome = f"HTTP {event['last_status']}" if event["last_status"] else event["last_error"]
            note = "" if event["status"] == "delivered" else " (not accepted: the sandbox tries again later)"
            print(f"{event['type']} {event['id']} delivered to {event['url']}: {outcome} {event['last_answer']}{note}")


def pay(args):
    path = f"/_sandbox/charges/{urllib.parse.quote(args.charge, safe='')}/pay"
    answer = _control("POST", path, {"even_if_reversed": args.even_if_reversed})
    if answer is None:
        return 1
    charge = answer["charge"]
    print(f"charge {charge['id']} (order_no {charge['order_no']}, {charge['amount'] / 100:.2f} yuan) paid")
    _report_events(answer["events"])
    return 0


def transfer(args):
    path = f"/_sandbox/transfers/{urllib.parse.quote(args.transfer, safe='')}/{args.outcome}"
    answer = _control("POST", path)
    if answer is None:
        return 1
    t = answer["transfer"]
    print(
        f"transfer {t['id']} (order_no {t['order_no']}, {t['amount'] / 100:.2f} yuan to {t['recipient']}) {t['status']}"
    )
    _report_events(answer["events"])
    return 0


def refund(args):
    answer = _control("POST", f"/_sandbox/refunds/{urllib.parse.quote(args.refund, safe='')}/{args.outcome}")
    if answer is None:
        return 1
    r = answer["refund"]
    print(f"refund {r['id']} (charge {r['charge']}, {r['amount'] / 100:.2f} yuan) {r['status']}")
    if r["status"] == "failed":
        print("Ping++ sends no webhook for a failed refund: payapi learns it by retrieving the refund.")
    _report_events(answer["events"])
    return 0


def fault(args):
    answer = _control(
        "POST",
        "/_sandbox/faults",
        {"kind": args.kind, "times": args.times, "seconds": args.seconds, "status": args.status},
    )
    if answer is None:
        return 1
    print(answer["message"])
    return 0


def listing(args):
    answer = _control("GET", "/_sandbox/state")
    if answer is None:
        return 1
    print("charges:")
    for c in answer["charges"]:
        state = "paid" if c["paid"] else "reversed" if c["reversed"] else "unpaid"
        print(
            f"  {c['id']}  order_no {c['order_no']}  {c['amount'] / 100:>10.2f}  {state}"
            f"{'  refunded ' + str(c['amount_refunded'] / 100) if c['amount_refunded'] else ''}"
        )
    print("refunds:")
    for r in answer["refunds"]:
        print(f"  {r['id']}  charge {r['charge']}  {r['amount'] / 100:>10.2f}  {r['status']}")
    print("transfers:")
    for t in answer["transfers"]:
        print(f"  {t['id']}  order_no {t['order_no']}  {t['amount'] / 100:>10.2f}  {t['status']}")
    return 0


def sms(args):
    if args.fault:
        answer = _control(
            "POST",
            "/_sandbox/sms/faults",
            {"kind": args.fault, "provider": args.provider, "times": args.times, "seconds": args.seconds},
        )
        if answer is None:
            return 1
        print(answer["message"])
        return 0
    if args.last is not None:
        try:
            status, answer = call("GET", "/_sandbox/sms/last?" + urllib.parse.urlencode({"phone": args.last}))
        except SandboxUnreachable as exc:
            print(exc, file=sys.stderr)
            return 1
        if status != 200:
            print(f"sandbox: {answer.get('error', {}).get('message', answer)}", file=sys.stderr)
            return 1
        print(answer["message"]["code"])
        return 0
    query = "?" + urllib.parse.urlencode({"phone": args.list}) if args.list else ""
    answer = _control("GET", "/_sandbox/sms" + query)
    if answer is None:
        return 1
    for m in answer["messages"]:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m["received_at"]))
        print(
            f"{at}Z  {m['provider']:<7}  {m['phone']:<16}  code {m['code']}  【{m['sign_name']}】 {m['template']}"
            f"  request {m['request_id']}"
        )
    if not answer["messages"]:
        print("no SMS yet")
    return 0
