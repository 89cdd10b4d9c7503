"""The client of the HTTP API, for the command line and any Python program: the API as
calls (`client.api.Api`), the one SSE parser (`client.sse`) and the one resuming
follower of a run's events (`client.follow.Follower`). It imports neither Flask nor
Celery nor Redis, so `stepstream` starts fast."""
