"""ApiError, the one exception domain code raises, and the codes of the contract."""

OK = 900
UNAUTHENTICATED = 901
INVALID = 904
SECRET_REJECTED = 905
LOCKED = 906
NOT_ALLOWED = 910
NOT_FOUND = 911
PROVIDER_FAILED = 920
UNEXPECTED = 999

HTTP_STATUS = {
    UNAUTHENTICATED: 401,
    INVALID: 400,
    SECRET_REJECTED: 403,
    LOCKED: 429,
    NOT_ALLOWED: 403,
    NOT_FOUND: 404,
    PROVIDER_FAILED: 502,
    UNEXPECTED: 500,
}

DEFAULT_MSG = {
    UNAUTHENTICATED: "请先登录",
    INVALID: "请求参数有误",
    SECRET_REJECTED: "验证失败",
    LOCKED: "尝试次数过多，请稍后再试",
    NOT_ALLOWED: "当前操作不被允许",
    NOT_FOUND: "记录不存在",
    PROVIDER_FAILED: "支付服务暂时不可用，请稍后再试",
    UNEXPECTED: "服务器开小差了，请稍后再试",
}


# Answers to an HTTP error that no route raised (the server's own, or falcon's: unknown route, wrong
# method, a request too large or malformed): the status's code and message. One table for the
# middleware's error handler and for what the gunicorn worker answers by itself.
HTTP_ERROR_ANSWERS = {
    404: (NOT_FOUND, "接口不存在"),
    405: (INVALID, "请求方法不允许"),
    408: (INVALID, "请求超时"),
    413: (INVALID, "请求体过大"),
    414: (INVALID, "请求地址过长"),
    431: (INVALID, "请求头过大"),
}


def http_error_answer(status):
    """(code, msg) for an HTTP error status: 5xx are unexpected; any other 4xx is malformed input."""
    if status >= 500:
        return UNEXPECTED, DEFAULT_MSG[UNEXPECTED]
    return HTTP_ERROR_ANSWERS.get(status, (INVALID, "请求格式有误"))


class ApiError(Exception):
    def __init__(self, code, msg=None, http_status=None, **extra):
        super().__init__(code, msg)
        self.code = code
        self.msg = msg or DEFAULT_MSG.get(code, "")
        self.http_status = http_status or HTTP_STATUS.get(code, 400)
        self.extra = extra  # e.g. retry_after for 906

    def body(self):
        return {"code": self.code, "msg": self.msg, **self.extra}


def invalid(msg="请求参数有误"):
    return ApiError(INVALID, msg)


def locked(retry_after_ms, msg=None):
    return ApiError(LOCKED, msg, retry_after=max(1, -(-retry_after_ms // 1000)))
