"""Inference engines behind one interface (`base.Engine`): the embedded transformers engine and a vLLM client."""
