"""The HTTP face of the cache engine: :class:`CacheMiddleware`, a shared RFC 9111 cache for any
ASGI app, its per-route :class:`CacheRule`, and :class:`TrustedForwarding` to declare the proxies
in front of the app."""

from redis_checkpoint.web.inputs import TrustedForwarding
from redis_checkpoint.web.middleware import CacheMiddleware, CacheRule

__all__ = ["CacheMiddleware", "CacheRule", "TrustedForwarding"]
