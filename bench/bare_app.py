"""The stack's ceiling: bare falcon answering {"code": 900} on payapi's route template.

Served by the same gunicorn.conf.py as payapi (a positional APP_MODULE overrides the config's
`wsgi_app` in gunicorn 27: WSGIApplication.init sets app_uri from the argument and load_config
only falls back to `wsgi_app` when none was given):

    gunicorn -c gunicorn.conf.py bench.bare_app:app
"""

import falcon


class Pay:
    def on_get(self, req, resp, pay_id):
        resp.media = {"code": 900}


app = falcon.App()
app.add_route("/rest/pay/{pay_id}", Pay())
