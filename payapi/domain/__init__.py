"""Pure rules, no I/O: each module imports nothing of payapi and nothing that touches the world.

lifecycles   every record's statuses, its one transition table, what each move announces
clock        integer milliseconds, ISO-8601 on the wire, the natural month in TIMEZONE
ids          24-hex record ids (ObjectId layout, unguessable)
"""
