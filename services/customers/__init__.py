"""The customers module: consumer-agnostic customer storage, CustomerService.

It imports no other domain module; modules that reference customers (orders, ...)
depend on it, never the reverse."""
