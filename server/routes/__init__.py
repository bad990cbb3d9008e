"""HTTP routes: thin handlers that read the app state, call the service and return its result."""
