"""What the resources share: path ids, the pay-info fast path, their logger ('payapi.resources')."""

import logging

import falcon

from payapi.contract.errors import invalid
from payapi.domain.ids import is_id

log = logging.getLogger("payapi.resources")


def path_id(value):
    if not is_id(value):
        raise invalid("id 格式错误")
    return value


def message_path_id(value):
    if not (value.startswith("msg_") and is_id(value[4:])):
        raise invalid("通知 id 格式错误")
    return value


def with_info(resp, info_json):
    # A PayAnswer whose info is already JSON text: it goes out as it is, not decoded and encoded again.
    resp.text = '{"code":900,"info":' + info_json + "}"
    resp.content_type = falcon.MEDIA_JSON
