"""The round driver and the backends that reach the sites."""
