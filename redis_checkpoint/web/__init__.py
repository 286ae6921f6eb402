"""The HTTP faces: :class:`CacheMiddleware`, a shared RFC 9111 cache for any ASGI app, its
per-route :class:`CacheRule`, :class:`TrustedForwarding` to declare the proxies in front of the
app, and :class:`SessionMiddleware`, server-side sessions on Redis."""

from redis_checkpoint.web.inputs import TrustedForwarding
from redis_checkpoint.web.middleware import CacheMiddleware, CacheRule
from redis_checkpoint.web.sessions import (
    SessionMiddleware,
    SessionStore,
    invalidate_user_sessions,
    regenerate_session,
)

__all__ = [
    "CacheMiddleware",
    "CacheRule",
    "SessionMiddleware",
    "SessionStore",
    "TrustedForwarding",
    "invalidate_user_sessions",
    "regenerate_session",
]
