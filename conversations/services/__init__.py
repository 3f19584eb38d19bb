"""Writes and use cases. Import from the submodules: messaging (the chat socket's use
cases), streaming (the reply stream), workers (this process's replies and the reaper),
context, dialogues, usage, presets, review, exports."""
