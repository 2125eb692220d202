"""The request use cases: what a caller (``caller.Caller``) may do to a request
(``service.RequestService``: create, read, submit a code, resend, cancel); every
change to a record goes through the lifecycle; the sweeper fails what went
silent; every rate limit on callers (``limits``).
"""
