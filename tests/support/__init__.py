"""What the tests and the benchmark share: plain helpers, no fixtures (those live in conftest.py files).

- `databases`, `mariadb`, `tls`: the test databases (SQLite files, a real MariaDB speaking TLS),
  migrated once per URL, and the invariants every database test ends on.
- `pingpp`: Ping++'s side (signed events, transfer objects, RSA keys, a scripted gateway).
- `config`: the tests' settings and the environment a payapi process gets for them.
- `scenarios`: phone users, pays, experts and withdrawals set up through the public routes.
- `operators`: the operators' console through webtest.
- `live_server`: a real gunicorn on 127.0.0.1 and parallel clients; `receiver`: a webhook receiver.
"""
