"""The HTTP face of the cache engine: :class:`CacheMiddleware`, a shared RFC 9111 cache for any
ASGI app, and its per-route :class:`CacheRule`."""

from redis_checkpoint.web.middleware import CacheMiddleware, CacheRule

__all__ = ["CacheMiddleware", "CacheRule"]
