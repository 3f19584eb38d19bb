"""Test helpers that run real servers (the fake OpenAI-compatible upstream)."""
