def test_healthz_reports_the_database_is_reachable(app):
    response = app.get("/healthz")
    assert response.json == {"code": 900, "db": "ok"}


def test_check_info_is_all_false_for_a_new_user(user):
    assert user.get("/rest/pay/checkInfo").json == {"code": 900, "passwd": False, "questions": False, "withdraw": False}


def test_created_pay_is_readable_by_its_payer(order_service, make_user):
    payer = make_user()
    created = order_service(userID=payer.id)
    assert created.json["code"] == 900, created.json
    pay_id = created.json["info"]["pay_id"]
    info = payer.get(f"/rest/pay/{pay_id}").json["info"]
    assert info["status"] == "pending" and info["charge"]["order_no"] == pay_id


def test_signed_charge_succeeded_credits_the_expert(order_service, make_user, fake_pingpp, send_event):
    payer = make_user()
    info = order_service(userID=payer.id).json["info"]
    charge = fake_pingpp.mark_paid(info["charge"]["id"])
    assert send_event("charge.succeeded", charge).json["code"] == 900
    assert payer.get(f"/rest/pay/{info['pay_id']}/status").json == {
        "code": 900,
        "status": "paid",
        "client_status": "pending",
    }
