"""The on-call inbox, a run-time service Alertmanager's webhook posts to (`modelmon receiver`).

payload.py validates webhook notifications; store.py keeps alerts, their history and incidents in
SQLite; incidents.py says what one incident is (the grouping key, the severity history); links.py
builds the silence and dashboard links; runbook.py renders the runbook; app.py is the Flask app
(inbox page, JSON API, /runbook); cli.py is the command module.
"""
