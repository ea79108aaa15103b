"""The access log on top of a :class:`LogStore`: group commit and signed checkpoints.

``append`` queues the entry and waits on a future. One writer task drains the queue and
commits up to ``max_batch`` entries in one transaction, then resolves every waiter; if
the commit fails, every waiter of that batch gets :class:`AccessLogError` (the broker
answers 503: no answer leaves without its entry). A second task signs an ``interval``
checkpoint (a signed tree head) every ``checkpoint_interval_s`` when entries were committed
since the last. Every checkpoint it signs goes to ``on_checkpoint`` (the broker publishes
it for the producer adapters to witness).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import structlog

from schemas.accesslog import AccessEntry, Checkpoint, EntryProof, StoredEntry
from schemas.jose import PrivateKey
from schemas.merkle import inclusion_proof
from schemas.messages import Period

from .chain import CheckpointReason, Encoded, Head, canonical, seal
from .errors import AccessLogClosed, AccessLogError
from .extract import decode_entries, period_bounds
from .ports import LogStore, ProvenExtract

__all__ = ["ChainedAccessLog"]

_log = structlog.get_logger("broker.accesslog")


@dataclass(slots=True)
class _Waiter:
    item: Encoded
    future: asyncio.Future[StoredEntry]


_STOP: Final = object()
"""Queued by ``close``: the writer commits what is ahead of it, then returns."""


async def _nothing() -> None:
    return None


class _EmptyLog(Exception):
    """Nothing to sign at start: the log is empty."""


def _copy(exc: AccessLogError) -> AccessLogError:
    """A fresh exception per waiter (one raised object in many tasks tangles tracebacks)."""
    err = type(exc)(str(exc))
    err.__cause__ = exc.__cause__ or exc
    return err


class ChainedAccessLog:
    """:class:`AccessLog` over any :class:`LogStore`; ``commits`` counts its transactions."""

    def __init__(self, store: LogStore, *, key: PrivateKey, instance: str,
                 checkpoint_interval_s: float = 1, max_batch: int = 512) -> None:
        self._store = store
        self._key = key
        self._instance = instance
        self._interval = checkpoint_interval_s
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Waiter | object] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._writer_done = asyncio.Event()
        self._closing = False
        self._dirty = False
        self.on_checkpoint: Callable[[Checkpoint, str], None] = lambda _cp, _token: None
        """Called with each checkpoint this log signs and its token; must not raise."""
        self.last_checkpoint: tuple[Checkpoint, str] | None = None
        """The last checkpoint this log signed, and its token."""
        self.before_close: Callable[[], Awaitable[None]] = _nothing
        """Awaited in ``close`` after the shutdown checkpoint, while the store is still open."""

    @property
    def commits(self) -> int:
        return self._store.commits

    async def open(self) -> None:
        if self._runner is not None:
            raise AccessLogError("the access log is already open")
        await self._store.open(create=True)
        self._runner = asyncio.create_task(self._run(), name="accesslog")
        # The head as it is now, signed unless it already was (a crash leaves entries
        # after the last checkpoint): what this instance publishes first.
        try:
            cp, token, _ = await self._store.current_checkpoint(self._start_sealer)
        except _EmptyLog:
            return
        except AccessLogError as exc:
            _log.warning("access_log_checkpoint_failed", reason="start", error=str(exc))
            return
        self._signed(cp, token)

    def _start_sealer(self, head: Head) -> tuple[Checkpoint, str]:
        if head.seq == 0:
            raise _EmptyLog
        return seal(head, key=self._key, instance=self._instance, reason="start")

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._write_loop(), name="accesslog-writer")
                tg.create_task(self._checkpoint_loop(), name="accesslog-checkpointer")
        except Exception:  # noqa: BLE001 - a bug in the writer: logged; appends then fail
            _log.exception("access_log_stopped")
        finally:
            self._writer_done.set()
            while not self._queue.empty():
                waiter = self._queue.get_nowait()
                if isinstance(waiter, _Waiter) and not waiter.future.done():
                    waiter.future.set_exception(AccessLogClosed("the access log has stopped"))

    def _usable(self) -> None:
        if self._runner is None:
            raise AccessLogClosed("the access log is not open")
        if self._closing or self._runner.done():
            raise AccessLogClosed("the access log is closed")

    async def append(self, entry: AccessEntry) -> StoredEntry:
        self._usable()
        future: asyncio.Future[StoredEntry] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Waiter(Encoded(entry, canonical(entry)), future))
        return await future

    async def _write_loop(self) -> None:
        try:
            while True:
                first = await self._queue.get()
                if first is _STOP:
                    return
                assert isinstance(first, _Waiter)
                batch, stop = [first], False
                while len(batch) < self._max_batch and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is _STOP:
                        stop = True
                        break
                    assert isinstance(item, _Waiter)
                    batch.append(item)
                await self._commit(batch)
                if stop:
                    return
        finally:
            self._writer_done.set()

    async def _commit(self, batch: Sequence[_Waiter]) -> None:
        try:
            rows = await self._store.append([w.item for w in batch])
        except AccessLogError as exc:
            self._fail(batch, exc)
            return
        except Exception as exc:  # noqa: BLE001 - an adapter let a library error through:
            # this batch fails like any other, and the log keeps serving the next one
            _log.exception("access_log_unexpected_error")
            failure = AccessLogError(f"{type(exc).__name__}: {exc}")
            failure.__cause__ = exc
            self._fail(batch, failure)
            return
        except BaseException:  # cancelled: no waiter may hang, and it propagates
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(
                        AccessLogClosed("the access log stopped before the entry was committed"))
            raise
        self._dirty = True
        for w, row in zip(batch, rows, strict=True):
            if not w.future.done():
                w.future.set_result(StoredEntry(seq=row.seq, prev_hash=row.prev_hash,
                                                hash=row.hash, entry=row.entry))

    @staticmethod
    def _fail(batch: Sequence[_Waiter], exc: AccessLogError) -> None:
        _log.error("access_log_commit_failed", entries=len(batch), error=str(exc))
        for w in batch:
            if not w.future.done():
                w.future.set_exception(_copy(exc))

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if not self._dirty:
                continue
            try:
                await self.checkpoint("interval")
            except AccessLogError as exc:
                _log.warning("access_log_checkpoint_failed", error=str(exc))
            except Exception:  # noqa: BLE001 - as in _commit: try again next interval
                _log.exception("access_log_checkpoint_failed")

    async def checkpoint(self, reason: CheckpointReason) -> Checkpoint:
        dirty, self._dirty = self._dirty, False
        signed: list[str] = []

        def sealer(head: Head) -> tuple[Checkpoint, str]:
            cp, token = seal(head, key=self._key, instance=self._instance, reason=reason)
            signed.append(token)
            return cp, token

        try:
            checkpoint = await self._store.write_checkpoint(sealer)
        except BaseException:
            self._dirty = self._dirty or dirty
            raise
        _log.info("access_log_checkpoint", seq=checkpoint.seq, reason=reason)
        self._signed(checkpoint, signed[-1])
        return checkpoint

    def _signed(self, checkpoint: Checkpoint, token: str) -> None:
        self.last_checkpoint = (checkpoint, token)
        try:
            self.on_checkpoint(checkpoint, token)
        except Exception:  # noqa: BLE001 - publishing is best effort; the next one retries
            _log.exception("access_log_checkpoint_publish_failed")

    async def consistency_to(self, size: int, sizes: Sequence[int]) -> dict[int, list[bytes]]:
        return await self._store.consistency_to(size, sizes)

    async def extract_proven(self, subject: str, period: Period | None) -> ProvenExtract:
        cp, token, new = await self._store.current_checkpoint(
            lambda head: seal(head, key=self._key, instance=self._instance, reason="extract"))
        if new:
            self._signed(cp, token)
        rows = await self._store.extract_rows(subject, *period_bounds(period), cp.seq)
        if not rows:
            return ProvenExtract(checkpoint=cp, token=token, proofs=[], entries=[])
        leaves = await self._store.leaves(cp.seq)
        proofs = [EntryProof(seq=seq, entry=body.decode("utf-8"),
                             path=[h.hex() for h in inclusion_proof(leaves, seq - 1)])
                  for seq, body in rows]
        return ProvenExtract(checkpoint=cp, token=token, proofs=proofs,
                             entries=decode_entries([body for _, body in rows]))

    async def extract(self, subject: str, period: Period | None) -> list[AccessEntry]:
        return decode_entries(await self._store.extract(subject, *period_bounds(period)))

    async def writable(self) -> bool:
        if self._runner is None or self._closing or self._runner.done():
            return False
        return await self._store.writable()

    async def close(self) -> None:
        runner = self._runner
        if runner is None or self._closing:
            return
        self._closing = True
        self._queue.put_nowait(_STOP)
        try:
            try:
                await self._writer_done.wait()
            finally:
                runner.cancel()
                await asyncio.wait([runner])  # the runner's own cancellation is not ours
            try:
                await self.checkpoint("shutdown")
            except AccessLogError as exc:
                _log.warning("access_log_checkpoint_failed", reason="shutdown", error=str(exc))
            else:
                await self.before_close()
        finally:
            await self._store.close()
