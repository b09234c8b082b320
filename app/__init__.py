"""The serving side of Apprentice: settings, CLI, web app (FastAPI + Gradio), inference engines.

Imports `storage/` and `learner/`; nothing imports `app/`.
"""
