"""A node's python functions, wired from its settings."""

from eventgate.functions.invocations import InvocationLog
from eventgate.functions.service import PythonFunctions
from eventgate.runtime import Runtime, RuntimeOptions
from eventgate.settings import Settings
from eventgate.store import Store


async def start_python_functions(
    settings: Settings, store: Store, *, worker: int = 0
) -> PythonFunctions:
    """The runtime (files under `<data_dir>/runtime`), the invocation records
    (`<data_dir>/invocations.db`) and the service following `store`, started.

    Every `--workers` process has its own, on the same files (see `workers.py`): a secondary
    (`worker` > 0) stores a call's record before answering, since the primary's config API
    reads it from the file."""
    options = RuntimeOptions(
        worker_idle_timeout=settings.worker_idle_timeout,
        server_idle_timeout=settings.scale_to_zero_after,
        queue_limit=settings.function_queue_limit,
        drain_timeout=settings.drain_timeout,
    )
    runtime = Runtime(settings.data_dir / "runtime", options)
    records = await InvocationLog.open(
        settings.data_dir / "invocations.db",
        retention=settings.invocation_retention,
        limit=settings.invocation_records,
        shared=worker > 0,
    )
    functions = PythonFunctions(
        store,
        runtime,
        records,
        default_timeout=settings.function_timeout,
        max_source_bytes=settings.max_source_bytes,
    )
    try:
        await functions.start()
    except BaseException:
        await functions.close()
        raise
    return functions
