"""Row changes to Redis: the payload contract, the triggers, write planning, the Redis side, committed mode, the worker loop, metrics, verify/load/reconcile."""
