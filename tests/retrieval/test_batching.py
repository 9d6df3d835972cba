"""MicroBatcher: grouping, slicing, limits, errors, and an event loop that stays free while the encoder runs."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from vision_long.retrieval.batching import EncoderBatchers, MicroBatcher, TextTooLong


class Recorder:
    """run(inputs) -> each input doubled; remembers every batch and the thread it ran on."""

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.batches, self.threads, self.delay, self.fail = [], set(), delay, fail

    def __call__(self, inputs):
        self.batches.append(list(inputs))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("encoder exploded")
        return [2 * x for x in inputs]


def run_with_batcher(run, coroutine_factory, max_batch=8, max_wait=0.05):
    async def main():
        with ThreadPoolExecutor(1, thread_name_prefix="encoder") as executor:
            batcher = MicroBatcher(run, executor, max_batch, max_wait)
            batcher.start()
            try:
                return await coroutine_factory(batcher)
            finally:
                await batcher.stop()

    return asyncio.run(main())


def test_concurrent_requests_share_a_call_and_get_their_slices():
    run = Recorder()
    requests = [[1], [2, 3], [4], [5, 6, 7]]
    results = run_with_batcher(run, lambda b: asyncio.gather(*(b.submit(r) for r in requests)))
    assert results == [[2], [4, 6], [8], [10, 12, 14]]
    assert run.batches == [[1, 2, 3, 4, 5, 6, 7]] and run.threads == {"encoder_0"}


def test_max_batch_is_respected_and_large_requests_run_alone():
    run = Recorder()
    requests = [[1, 2, 3], [4, 5, 6], [7] * 10, [8]]
    results = run_with_batcher(run, lambda b: asyncio.gather(*(b.submit(r) for r in requests)), max_batch=4)
    assert results == [[2, 4, 6], [8, 10, 12], [14] * 10, [16]]
    assert [len(b) for b in run.batches] == [3, 3, 10, 1]


def test_batch_size_one_runs_every_request_alone():
    run = Recorder()
    results = run_with_batcher(run, lambda b: asyncio.gather(*(b.submit([i]) for i in range(5))), max_batch=1)
    assert results == [[0], [2], [4], [6], [8]] and run.batches == [[0], [1], [2], [3], [4]]


def test_errors_reach_every_request_of_the_batch():
    async def both(b):
        return await asyncio.gather(b.submit([1]), b.submit([2]), return_exceptions=True)

    results = run_with_batcher(Recorder(fail=True), both)
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


def test_event_loop_is_free_while_the_encoder_runs():
    async def probe(b):
        ticks = 0
        task = asyncio.ensure_future(b.submit([1]))
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.01)
        return ticks, await task

    ticks, result = run_with_batcher(Recorder(delay=0.3), probe, max_wait=0.0)
    assert result == [2] and ticks >= 10


def test_submit_requires_a_running_batcher():
    batcher = MicroBatcher(Recorder(), ThreadPoolExecutor(1), 4, 0.01)
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(batcher.submit([1]))
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), ThreadPoolExecutor(1), 0, 0.01)


def test_encoder_batchers_respect_truncate_per_request(encoder):
    long_text = "a striped red circle in the top-left cell. " * 40
    short = "a blue square"

    async def main():
        service = EncoderBatchers(encoder, max_batch=8, max_wait=0.05)
        service.start()
        try:
            ok = service.embed_texts([short, long_text], truncate=True)
            refused = service.embed_texts([short, long_text], truncate=False)
            return await asyncio.gather(ok, refused, return_exceptions=True)
        finally:
            await service.stop()

    (vectors, tokens), refused = asyncio.run(main())
    assert isinstance(refused, TextTooLong) and refused.index == 1 and "context is 248" in str(refused)
    want = encoder.encode_text([short, long_text], truncate=True).numpy()
    assert np.allclose(np.stack(vectors), want, atol=1e-6)
    assert tokens == encoder.tokenizer.count_tokens(short) + 248
