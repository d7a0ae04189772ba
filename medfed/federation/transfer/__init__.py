"""How bytes move: the signed HTTPS client and chunked, resumable, hash-checked transfers."""
