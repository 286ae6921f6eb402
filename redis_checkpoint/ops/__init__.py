"""Operating the caches: the health monitor, the management API and the keyspace sampler."""

from redis_checkpoint.ops.health import ComponentHealth, HealthMonitor, HealthReport

__all__ = ["ComponentHealth", "HealthMonitor", "HealthReport"]
