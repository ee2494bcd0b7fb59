"""A short load test: 2,000 requests through tritonclient's async gRPC client at concurrency 1, 8 and 64, every
tenth one malformed (a wrong shape). Each request is counted once by its id: 0 lost, 0 duplicated, 0 errors for
valid requests, every malformed one refused with INVALID_ARGUMENT."""
from __future__ import annotations

import asyncio
import collections

import numpy as np

from conftest import affine_reference

import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpc_aio

PLAN = ((1, 200), (8, 600), (64, 1200))  # (concurrency, requests): 2,000 in all


def test_load_with_injected_faults(server):
    async def run(concurrency: int, count: int, offset: int, answers: collections.Counter, failures: list):
        client = grpc_aio.InferenceServerClient(server.grpc_url)
        queue = asyncio.Queue()
        for index in range(offset, offset + count):
            queue.put_nowait(index)

        async def worker():
            while not queue.empty():
                index = queue.get_nowait()
                malformed = index % 10 == 0
                x = np.full((1 + index % 3, 5 if malformed else 4), index % 97, np.float32)
                tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                try:
                    result = await client.infer("affine", [tensor], request_id=str(index))
                except Exception as error:
                    answers[index] += 1
                    if not (malformed and "expected [-1, 4]" in str(error)):
                        failures.append((index, str(error)))
                    continue
                answers[int(result.get_response().id)] += 1
                if malformed or not np.array_equal(result.as_numpy("y"), affine_reference(x)):
                    failures.append((index, "wrong answer"))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await client.close()

    answers: collections.Counter = collections.Counter()
    failures: list = []
    offset = 0
    for concurrency, count in PLAN:
        asyncio.run(run(concurrency, count, offset, answers, failures))
        offset += count
    lost = [i for i in range(offset) if answers[i] == 0]
    duplicated = [i for i, n in answers.items() if n > 1]
    print(f"load: {offset} requests, {len(lost)} lost, {len(duplicated)} duplicated, {len(failures)} errors")
    assert (lost, duplicated, failures) == ([], [], [])
