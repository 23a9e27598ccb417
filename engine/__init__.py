"""llmtune's engine: config, data, formatting, preview and training. Never imports Textual.

Importing `engine` or `engine.config` stays light (no torch, transformers, datasets): the wizard
and the validator run before any of the heavy stack is needed.
"""
