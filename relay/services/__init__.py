"""The node's rules with their storage: one module per concern, free of aiohttp.

Handlers parse and authenticate, call a service, and serialise what it returns.
Each service takes its few dependencies in its constructor.
"""
