"""The first schema: pays, wallets and ledger, withdrawals, security settings, SMS codes, events.

Applied migrations are never edited; a change of schema is a new file.
"""

import peewee as pw
from peewee_migrate import Migrator


class LongTextField(pw.TextField):
    # MySQL's TEXT stops at 65,535 bytes; a webhook body may be 64 KiB of UTF-8.
    field_type = "LONGTEXT"


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    @migrator.create_model
    class ClientReport(pw.Model):
        id = pw.AutoField()
        pay_id = pw.CharField(index=True, max_length=24)
        user_id = pw.CharField(max_length=24)
        status = pw.CharField(max_length=16)
        client_ip = pw.CharField(default='', max_length=64)
        platform = pw.CharField(default='', max_length=32)
        store = pw.CharField(default='', max_length=64)
        created_at = pw.BigIntegerField()

        class Meta:
            table_name = "client_report"

    @migrator.create_model
    class Event(pw.Model):
        event_id = pw.CharField(max_length=64, primary_key=True)
        type = pw.CharField(max_length=64)
        object_id = pw.CharField(default='', max_length=64)
        outcome = pw.CharField(max_length=16)
        detail = pw.CharField(default='', max_length=255)
        payload = LongTextField()
        received_at = pw.BigIntegerField()

        class Meta:
            table_name = "event"

    @migrator.create_model
    class LedgerEntry(pw.Model):
        id = pw.AutoField()
        user_id = pw.CharField(index=True, max_length=24)
        amount = pw.BigIntegerField()
        kind = pw.CharField(max_length=24)
        reference = pw.CharField(max_length=64)
        balance_after = pw.BigIntegerField()
        created_at = pw.BigIntegerField()

        class Meta:
            table_name = "ledger_entry"
            indexes = [(('kind', 'reference'), True)]

    @migrator.create_model
    class Lockout(pw.Model):
        id = pw.AutoField()
        user_id = pw.CharField(max_length=24)
        kind = pw.CharField(max_length=16)
        failures = pw.IntegerField(default=0)
        window_start = pw.BigIntegerField(default=0)
        locked_until = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "lockout"
            indexes = [(('user_id', 'kind'), True)]

    @migrator.create_model
    class Pay(pw.Model):
        pay_id = pw.CharField(max_length=24, primary_key=True)
        type = pw.CharField(max_length=8)
        o_id = pw.CharField(default='', max_length=24)
        note_id = pw.CharField(default='', max_length=24)
        expert_id = pw.CharField(index=True, max_length=24)
        user_id = pw.CharField(index=True, max_length=24)
        amount = pw.BigIntegerField()
        money = pw.BigIntegerField()
        currency = pw.CharField(default='cny', max_length=8)
        channel = pw.CharField(max_length=32)
        subject = pw.CharField(max_length=32)
        description = pw.CharField(default='', max_length=128)
        charge = LongTextField(null=True)
        charge_id = pw.CharField(max_length=64, null=True, unique=True)
        status = pw.CharField(default='pending', max_length=16)
        client_status = pw.CharField(default='pending', max_length=16)
        open_for = pw.CharField(max_length=40, null=True, unique=True)
        credited = pw.BigIntegerField(default=0)
        amount_refunded = pw.BigIntegerField(default=0)
        time_expire = pw.BigIntegerField(null=True)
        client_ip = pw.CharField(default='', max_length=64)
        platform = pw.CharField(default='', max_length=32)
        store = pw.CharField(default='', max_length=64)
        created_at = pw.BigIntegerField(index=True)
        updated_at = pw.BigIntegerField()
        paid_at = pw.BigIntegerField(null=True)

        class Meta:
            table_name = "pay"
            indexes = [(('status', 'created_at'), False), (('type', 'o_id', 'note_id'), False)]

    @migrator.create_model
    class Profile(pw.Model):
        user_id = pw.CharField(max_length=24, primary_key=True)
        passwd_hash = pw.CharField(max_length=100, null=True)
        answers_hash = pw.CharField(max_length=100, null=True)
        account_type = pw.CharField(default='', max_length=16)
        account_id = pw.CharField(default='', max_length=64)
        account_name = pw.CharField(default='', max_length=32)
        created_at = pw.BigIntegerField()
        updated_at = pw.BigIntegerField()

        class Meta:
            table_name = "profile"

    @migrator.create_model
    class SmsCode(pw.Model):
        id = pw.AutoField()
        user_id = pw.CharField(max_length=24)
        purpose = pw.CharField(max_length=32)
        phone = pw.CharField(max_length=32)
        code_hash = pw.CharField(max_length=64)
        tries = pw.IntegerField(default=0)
        used_at = pw.BigIntegerField(null=True)
        created_at = pw.BigIntegerField()
        expires_at = pw.BigIntegerField()

        class Meta:
            table_name = "sms_code"
            indexes = [(('user_id', 'purpose', 'created_at'), False)]

    @migrator.create_model
    class Wallet(pw.Model):
        user_id = pw.CharField(max_length=24, primary_key=True)
        balance = pw.BigIntegerField(default=0)
        updated_at = pw.BigIntegerField()

        class Meta:
            table_name = "wallet"

    @migrator.create_model
    class Withdrawal(pw.Model):
        withdraw_id = pw.CharField(max_length=24, primary_key=True)
        user_id = pw.CharField(index=True, max_length=24)
        amount = pw.BigIntegerField()
        status = pw.CharField(default='pending', max_length=16)
        account_type = pw.CharField(max_length=16)
        account_id = pw.CharField(max_length=64)
        account_name = pw.CharField(max_length=32)
        month = pw.CharField(max_length=7)
        active_month = pw.CharField(max_length=40, null=True, unique=True)
        transfer_id = pw.CharField(max_length=64, null=True)
        transfer = LongTextField(null=True)
        attempts = pw.IntegerField(default=0)
        last_error = pw.CharField(default='', max_length=255)
        lease_until = pw.BigIntegerField(default=0)
        client_ip = pw.CharField(default='', max_length=64)
        platform = pw.CharField(default='', max_length=32)
        store = pw.CharField(default='', max_length=64)
        created_at = pw.BigIntegerField()
        updated_at = pw.BigIntegerField()

        class Meta:
            table_name = "withdrawal"
            indexes = [(('status', 'updated_at'), False)]


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_model('withdrawal')

    migrator.remove_model('wallet')

    migrator.remove_model('sms_code')

    migrator.remove_model('profile')

    migrator.remove_model('pay')

    migrator.remove_model('lockout')

    migrator.remove_model('ledger_entry')

    migrator.remove_model('event')

    migrator.remove_model('client_report')

