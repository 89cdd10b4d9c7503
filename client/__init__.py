"""The command line client: talks to the HTTP API, never imports Flask or Celery, so
`stepstream` starts fast."""
