"""Alert rules, state and notifiers.

Nothing here yet: the alert engine reads the OTLP metrics that the distro already exports
(``http.server.request.duration``, DB and system metrics), so it can be added without changing
the span or metric pipeline.
"""
