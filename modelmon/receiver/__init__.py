"""The on-call inbox, a run-time service Alertmanager's webhook posts to (`modelmon receiver`).

payload.py validates webhook notifications, store.py keeps alerts and their history in SQLite,
app.py is the Flask app (inbox page and API), cli.py is the command module.
"""
