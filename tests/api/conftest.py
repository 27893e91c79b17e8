"""The API tier's fixtures (the databases, the sandbox and the app are tests/conftest.py's): phone
users, pays and experts set up through the routes (tests/support/scenarios.py), withdrawals at each
stage, operator accounts, a stopped clock, the app with a scripted gateway. The browser tier and the
benchmark use them too."""

import time

import pytest
import time_machine
import webtest

from payapi.app import create_app
from payapi.money.withdrawals import run_payouts
from payapi.users.sms import FileSms
from tests.support import scenarios
from tests.support.operators import OPERATOR_PASSWORD, basic


@pytest.fixture
def make_user(app, settings):
    return lambda phone="13800138000", user_id=None: scenarios.User(app, settings, phone=phone, user_id=user_id)


@pytest.fixture
def user(make_user):
    return make_user()


@pytest.fixture
def send_event(app, pingpp_keys):
    """POST a signed Ping++ event to the webhook: send(event_type, obj, event_id=None, body=None)."""
    return lambda *args, **kwargs: scenarios.send_event(app, pingpp_keys[0], *args, **kwargs)


@pytest.fixture
def order_service(app):
    """The app's order service: creates pays through /internal/pays (of another app with via=)."""
    return lambda via=None, **fields: scenarios.create_pay(via or app, **fields)


@pytest.fixture
def pay_expert(app, fake_pingpp, pingpp_keys):
    """Credit an expert: pay(expert_id, money) -> the pay's info."""
    return lambda expert_id, money: scenarios.pay_expert(app, fake_pingpp, pingpp_keys[0], expert_id, money)


# What happens to a withdrawal: an expert with money, their pending withdrawal, Ping++'s transfer.


@pytest.fixture
def expert(make_user, pay_expert):
    """An expert with a pay password, an account and 10,000 fen available."""
    user = scenarios.set_up_expert(make_user())
    pay_expert(user.id, 10_000)
    return user


@pytest.fixture
def pending(expert):
    """The id of the expert's pending withdrawal of 3,000 fen."""
    response = scenarios.withdraw(expert, 3_000)
    assert response.json["code"] == 900, response.json
    return response.json["withdraw_id"]


@pytest.fixture
def processing(pending, gateway, fake_pingpp):
    """(withdraw_id, transfer_id) of a withdrawal Ping++ accepted."""
    assert run_payouts(gateway) == {"sent": 1, "failed": 0}
    (transfer_id,) = fake_pingpp.transfers
    return pending, transfer_id


@pytest.fixture
def make_operator(database, settings):
    """An operator account (bcrypt at the tests' cost); -> its Basic headers."""
    from payapi.backoffice import operators

    def make(name="alice", password=OPERATOR_PASSWORD):
        operators.add(name, password, settings.bcrypt_rounds)
        return basic(name, password)

    return make


@pytest.fixture
def clock():
    """Time stopped where the test starts (time-machine): .shift(seconds) and .move_to(when) move it."""
    with time_machine.travel(time.time(), tick=False) as traveller:
        yield traveller


@pytest.fixture
def app_with(database, settings):
    """The app with another gateway (a Scripted one)."""
    return lambda gateway: webtest.TestApp(create_app(settings, gateway, FileSms(settings.sms_file)))
