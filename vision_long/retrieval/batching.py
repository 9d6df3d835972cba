"""Dynamic micro-batching: concurrent requests share one encoder call.

A `MicroBatcher` owns a queue and a task on the running event loop. The first request to arrive opens a batch;
requests that arrive within `max_wait` seconds join it until it holds `max_batch` inputs (a request is never
split, so one larger than `max_batch` runs alone). The batch runs in `executor` (one encoder thread), so the event
loop keeps accepting requests meanwhile, and each request gets back exactly its own slice of the outputs.
`max_batch=1` turns batching off: every request runs alone, in arrival order.

`EncoderBatchers` puts an encoder behind two of them, one per input kind (token ids, images), sharing one
encoder thread. Texts are tokenized per request, so each request's `truncate` holds whatever it is batched with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vision_long.encoders.base import Encoder
from vision_long.tokenization import pad_id_lists


@dataclass
class _Request:
    inputs: Sequence[Any]
    future: asyncio.Future


class MicroBatcher:
    """Group `submit` calls into calls of `run(inputs) -> outputs` (same length, same order) in `executor`."""

    def __init__(
        self, run: Callable[[list[Any]], Sequence[Any]], executor: Executor, max_batch: int = 64, max_wait: float = 0.005
    ):
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait >= 0, got {max_batch} and {max_wait}")
        self.run, self.executor, self.max_batch, self.max_wait = run, executor, max_batch, max_wait
        self.calls = 0  # encoder calls made (for tests and logs)
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the batching task; requests still queued fail with `CancelledError`."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()

    async def submit(self, inputs: Sequence[Any]) -> list[Any]:
        """Outputs for `inputs`, computed in a batch with whatever else arrives meanwhile."""
        if self._task is None or self._task.done():
            raise RuntimeError("MicroBatcher is not running; call start() inside the event loop")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(inputs, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Request | None = None
        while True:
            batch = [carry or await self._queue.get()]
            carry = None
            size = len(batch[0].inputs)
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch:
                timeout = deadline - time.monotonic()
                try:
                    request = self._queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self._queue.get(), timeout)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if size + len(request.inputs) > self.max_batch:
                    carry = request
                    break
                batch.append(request)
                size += len(request.inputs)
            await self._execute(loop, [r for r in batch if not r.future.done()])

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        if not batch:
            return
        inputs = [x for r in batch for x in r.inputs]
        self.calls += 1
        try:
            outputs = await loop.run_in_executor(self.executor, self.run, inputs)
        except Exception as e:  # the encoder failed: every request of this batch gets the error
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(e)
            return
        start = 0
        for r in batch:
            if not r.future.done():
                r.future.set_result(list(outputs[start : start + len(r.inputs)]))
            start += len(r.inputs)


class TextTooLong(ValueError):
    """A text over the encoder's context in a request that did not allow truncation."""

    def __init__(self, index: int, tokens: int, context: int):
        super().__init__(f"input {index} is {tokens} tokens long (with start/end tokens) but the context is {context}")
        self.index = index


class EncoderBatchers:
    """Micro-batched `encode_text` (as token ids) and `encode_image` on one encoder thread."""

    def __init__(self, encoder: Encoder, max_batch: int = 64, max_wait: float = 0.005):
        self.encoder, self.max_batch, self.max_wait = encoder, max_batch, max_wait
        self.executor: ThreadPoolExecutor | None = None
        self.text: MicroBatcher | None = None
        self.image: MicroBatcher | None = None

    def start(self) -> None:
        """Start the encoder thread and both batchers on the running loop (again after `stop`)."""
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="encoder")
        self.text = MicroBatcher(self._encode_ids, self.executor, self.max_batch, self.max_wait)
        self.image = MicroBatcher(self._encode_images, self.executor, self.max_batch, self.max_wait)
        self.text.start()
        self.image.start()

    async def stop(self) -> None:
        await asyncio.gather(self.text.stop(), self.image.stop())
        self.executor.shutdown(wait=True)

    async def embed_texts(self, texts: list[str], truncate: bool) -> tuple[list[np.ndarray], int]:
        """float32 [D] vectors of `texts` and their token count (after truncation); `TextTooLong` unless `truncate`."""
        lists = await asyncio.to_thread(self._tokenize, texts, truncate)
        return await self.text.submit(lists), sum(len(x) for x in lists)

    async def embed_images(self, images: list[Image.Image]) -> list[np.ndarray]:
        """float32 [D] vectors of decoded images."""
        return await self.image.submit(images)

    def _tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]:
        tokenizer, context = self.encoder.tokenizer, self.encoder.context_length
        lists, cut = tokenizer.tokenize_to_lists(texts, context, truncate=True)
        if not truncate and any(cut):
            i = cut.index(True)
            raise TextTooLong(i, tokenizer.count_tokens(texts[i]), context)
        return lists

    def _encode_ids(self, lists: list[list[int]]) -> np.ndarray:
        pad = getattr(self.encoder.tokenizer, "pad_token_id", 0)  # CLIP pads with 0; LLM tokenizers name theirs
        ids = pad_id_lists(lists, max(len(x) for x in lists), pad)  # Tensor[N, L]: L = the longest, not the context
        return self.encoder.encode_text(ids, batch_size=self.max_batch).float().cpu().numpy()

    def _encode_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.encoder.encode_image(images, batch_size=self.max_batch).float().cpu().numpy()
