"""GRPO with logprob-based rewards, in plain PyTorch."""
