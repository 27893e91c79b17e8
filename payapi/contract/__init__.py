"""The wire: what requests and answers look like, written once.

shapes     every request and answer body as a msgspec Struct; the project's types (fen, text, ids); the codec
patterns   the text and money rules as regular expressions (for JSON Schema)
render     records as answers (pay info, withdrawals, refunds, the operators' views)
errors     the contract's codes and ApiError

Wire names (userID, createdAt, o_id) appear only here. Order: render > shapes > errors, patterns.
May import: domain. No database, no network, no falcon.
"""
