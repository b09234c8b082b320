"""The OpenAI-compatible HTTP API under /v1 (routes in openai.py, request models in protocol.py, auth in deps.py,
error shapes in errors.py). Mounted by app.main.create_app beside the chat UI."""
