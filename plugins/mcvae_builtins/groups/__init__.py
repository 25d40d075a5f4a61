"""Built-in groups plugin."""
