"""The benchmark's arq producer, run in arq's own venv by ``bench.systems.peers.ArqProducer``.

Reads one JSON request a line on stdin (``{"queue", "task", "args": [[...], ...], "delay_s"}``),
enqueues each argument list with ``ArqRedis.enqueue_job`` (a batch's jobs awaited together,
arq having no bulk enqueue), and answers ``ok`` (or the error) on a line of stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings


async def enqueue(pool: ArqRedis, request: dict) -> None:
    defer = request["delay_s"]
    await asyncio.gather(
        *(
            pool.enqueue_job(request["task"], *args, _queue_name=request["queue"], _defer_by=defer)
            for args in request["args"]
        )
    )


async def main(redis_url: str) -> None:
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    reader = asyncio.StreamReader(limit=2**26)
    protocol = asyncio.StreamReaderProtocol(reader)
    await asyncio.get_running_loop().connect_read_pipe(lambda: protocol, sys.stdin)
    while line := await reader.readline():
        try:
            await enqueue(pool, json.loads(line))
        except Exception as error:  # the harness reads the error and raises it there
            answer = f"error {type(error).__name__}: {error}"
        else:
            answer = "ok"
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()
    await pool.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
