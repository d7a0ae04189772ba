"""The coordinator: its HTTP API, its state (store, blobs) and the jobs it drives."""
