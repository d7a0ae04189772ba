"""Who is who in a federation: the CA and startup kits, request signatures, certificates."""
