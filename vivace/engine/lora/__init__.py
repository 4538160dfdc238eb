"""Multi-LoRA serving: PEFT adapters read from disk (adapter.py), stacked per layer into adapter slots and
applied to every token by its slot in one forward pass (layers.py), named and loaded at run time (manager.py)."""
