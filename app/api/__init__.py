"""The HTTP layer (FastAPI and ASGI): routes, problem rendering, auth, backpressure, limits."""
