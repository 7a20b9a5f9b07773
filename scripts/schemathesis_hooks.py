"""Schemathesis hooks for `make schemathesis` (loaded through SCHEMATHESIS_HOOKS): the SET
push receiver's body, `application/secevent+jwt`, is a compact JWT sent as text."""

import schemathesis

schemathesis.serializer.alias("application/secevent+jwt", "text/plain")
