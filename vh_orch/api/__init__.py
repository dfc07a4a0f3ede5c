"""The HTTP API `vh-orch serve` answers: the Valohai subset the `vh` client uses, and vh-orch's own.

Routes are thin: they validate, check who asks (auth.py), and call the store and the same services
as the CLI. Another user's project answers 404, never 403.
"""
