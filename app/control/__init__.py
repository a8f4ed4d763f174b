"""The control plane: what operators see and do, for the CLI and the HTTP API."""
