"""`make bench`: the service against a straightforward implementation and a no-validation floor."""
