"""Structured outputs: what a request's text must match (params.py), its grammar compiled for the model's
tokenizer (grammar.py, over llguidance) and the per-row token masks the sampler applies (masks.py)."""
