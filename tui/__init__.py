"""llmtune's terminal front end: the CLI, the wizard and the dashboard."""
