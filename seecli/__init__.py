"""The `see` command line: serve, generate, and model provisioning. Commands only wire things together."""
