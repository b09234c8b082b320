"""The learning side of Apprentice: model files, SDFT and SFT training rounds, evaluation.

Imports `storage/`, torch, transformers and peft; never `app/`.
"""
