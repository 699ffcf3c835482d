"""Code both services use: chain profiles, errors, request signing, the RPC reader."""
