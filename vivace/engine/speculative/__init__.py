"""Speculative decoding: proposers guess a sequence's next tokens, one forward pass verifies them."""
