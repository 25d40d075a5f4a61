"""Built-in networks plugin."""
