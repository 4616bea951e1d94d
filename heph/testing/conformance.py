"""The storage conformance suite: the contract of ``heph.runtime.storage.base.Storage`` as tests.

Every adapter (the JSON-file store, the in-memory store, a future PostgreSQL
one) runs the same tests by subclassing ``StorageConformance``::

    class TestJsonFileStorage(StorageConformance):
        def make_storage(self, tmp_path):
            return JsonFileStorage(tmp_path / "store")

The tests build ``Instance`` values directly (``make_instance``): a store keeps
whatever the engine hands it and never needs a workflow definition.

About concurrency: session exclusivity is checked from a *second thread* of
the test process. The contract is that no two sessions of one id are open at
once, whoever opens them; a thread is the cheapest other party, and it catches
adapters whose locks are re-entrant per process or per thread (a second
session from the same thread would then wrongly pass, or wrongly deadlock).
Exclusion between separate processes is the adapter's own business to test
(``tests/test_multiprocess.py`` does it for the JSON-file store); the crash-recovery test
does fork a child (``multiprocessing``'s ``fork`` context) for adapters that persist: the
child builds its own handle with ``reopen_storage`` (a connection pool must never be shared
across a fork), writes under a session and is killed with SIGKILL while it holds it.

Uniqueness is part of the contract: ``insert``/``update`` refuse, with ``AlreadyRunning``
and nothing written, an active run that ``heph.core.uniqueness.conflicts`` with another
active run of the id. The cases below are written out (not computed from ``conflicts``), so
the suite states the rule on its own.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from heph.core.instance import Context, HistoryEntry, Instance
from heph.core.uniqueness import scope_of_id
from heph.errors import AlreadyRunning, InstanceBusy, InstanceNotFound, StorageError
from heph.runtime.storage.base import RunRef, Storage

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
WORKFLOW = "conformance_flow"


def make_instance(
    instance_id: str = "conf::one",
    *,
    seq: int = 0,
    status: str = "completed",
    workflow: str = WORKFLOW,
    version: int = 1,
    due_at: datetime | None = None,
    wait_kind: str = "timer",
    scope: str | None = None,
) -> Instance:
    """A plausible run of ``instance_id`` in ``status``; ``seq`` orders runs (higher = newer).

    A ``waiting`` run waits on step ``pause`` (``wait_kind`` event, timer or retry;
    ``due_at`` for timers and retries); ``pending``/``running`` runs have an active step.
    ``scope`` is the run's uniqueness scope (default: what a run stored without one reads as,
    ``heph.core.uniqueness.scope_of_id``: ``none`` for a suffixed id, else ``workflow``).
    """
    created = BASE + timedelta(seconds=seq)
    run = f"{created:%Y%m%dT%H%M%S%f}-{seq:06x}"
    history = [
        HistoryEntry("first", "completed", event="ok", attempt=1, started_at=created,
                     finished_at=created + timedelta(milliseconds=5), duration_ms=5.0),
    ]
    instance = Instance(
        id=instance_id,
        workflow=workflow,
        version=version,
        status=status,
        context=Context(initial={"n": seq, "text": "grüße ✓", "nested": {"list": [1, 2.5, None, True]}},
                        steps={"first": {"value": seq}}),
        run=run,
        created_at=created,
        updated_at=created + timedelta(milliseconds=5),
        runtime_metadata={"seq": seq},
        completed=["first"],
        history=history,
        scope=scope if scope is not None else scope_of_id(instance_id),
    )
    if status in ("pending", "running"):
        instance.active = [{"step": "second", "config": None, "attempt": 1, "first_attempt": 1}]
        if status == "running":
            instance.lease = {"pid": 1, "host": "conformance", "since": created.isoformat()}
    elif status == "waiting":
        kind = wait_kind if due_at is not None else "event"
        instance.waits = {"pause": {
            "kind": kind,
            "config": {"duration": 1, "unit": "hour"} if kind == "timer" else None,
            "attempt": 2 if kind == "retry" else 1,
            "first_attempt": 1,
            "since": created.isoformat(),
            "due_at": due_at.isoformat() if due_at is not None else None,
        }}
        instance.history.append(HistoryEntry("pause", "async", attempt=1, started_at=created,
                                             finished_at=created, duration_ms=0.0))
    elif status == "completed":
        instance.completed.append("done")
        instance.history.append(HistoryEntry("done", "completed", event="done", attempt=1,
                                             started_at=created, finished_at=created, duration_ms=0.0))
    elif status == "failed":
        instance.failed = {"step": "second", "config": None, "attempt": 1}
        instance.error = {"type": "builtins.RuntimeError", "message": "boom", "traceback": "Traceback...",
                          "step": "second"}
        instance.history.append(HistoryEntry("second", "failed", attempt=1, started_at=created,
                                             finished_at=created, duration_ms=1.0, error=instance.error))
    elif status == "cancelled":
        instance.history.append(HistoryEntry("pause", "cancelled", attempt=1, finished_at=created))
    return instance


def finish(instance: Instance) -> Instance:
    """The same run, completed (waits, active steps and lease dropped)."""
    out = instance.copy()
    out.status = "completed"
    out.waits, out.active, out.lease = {}, [], None
    out.completed.append("done")
    out.history.append(HistoryEntry("done", "completed", event="done", attempt=1,
                                    started_at=out.updated_at, finished_at=out.updated_at, duration_ms=0.0))
    out.updated_at = out.updated_at + timedelta(seconds=1)
    return out


# -- the cases of the uniqueness rule ------------------------------------------------------------

#: (scope of the first run, scope of the second, same workflow?, same version?, do they conflict?)
#: The rule (``heph.core.uniqueness.conflicts``) written out: ``global`` on either side holds the
#: id across every workflow; ``none`` runs of one id always conflict; otherwise runs of different
#: workflows never conflict, and within one workflow only two ``version`` runs of different
#: versions may coexist.
UNIQUENESS_CASES = [
    ("workflow", "workflow", True, True, True),
    ("workflow", "workflow", True, False, True),
    ("workflow", "workflow", False, True, False),
    ("version", "version", True, True, True),
    ("version", "version", True, False, False),
    ("version", "version", False, True, False),
    ("workflow", "version", True, False, True),
    ("version", "workflow", True, False, True),
    ("workflow", "version", False, True, False),
    ("version", "workflow", False, False, False),
    ("global", "global", True, True, True),
    ("global", "global", False, True, True),
    ("global", "workflow", False, True, True),
    ("workflow", "global", False, True, True),
    ("global", "version", False, False, True),
    ("version", "global", False, False, True),
    ("global", "workflow", True, False, True),
    ("none", "none", True, True, True),
    ("none", "none", True, False, True),
]


def _case_id(case: tuple) -> str:
    first, second, same_workflow, same_version, clash = case
    return (f"{first}-{second}-{'same' if same_workflow else 'other'}wf-"
            f"{'same' if same_version else 'other'}v-{'conflict' if clash else 'ok'}")


def uniqueness_pair(case: tuple, second_status: str = "waiting") -> tuple[Instance, Instance]:
    """Two runs of one id for ``case``: an active (waiting) first one, and a second one in
    ``second_status``."""
    first_scope, second_scope, same_workflow, same_version, _ = case
    instance_id = "conf::u::0badcafe" if "none" in (first_scope, second_scope) else "conf::u"
    first = make_instance(instance_id, seq=1, status="waiting", wait_kind="event", scope=first_scope,
                          workflow=WORKFLOW, version=1)
    second = make_instance(instance_id, seq=2, status=second_status, wait_kind="event", scope=second_scope,
                           workflow=WORKFLOW if same_workflow else "conformance_other",
                           version=1 if same_version else 2)
    return first, second


AT = BASE + timedelta(hours=1)


def _crash_child(conformance, storage, instance: Instance, conn) -> None:
    """In the forked child: a handle of its own, a session holding the id, two writes, then wait."""
    try:
        mine = conformance.reopen_storage(storage)
        with mine.session(instance.id, timeout=10) as session:
            session.insert(instance)
            updated = instance.copy()
            updated.runtime_metadata["step"] = "second write"
            updated.updated_at = updated.updated_at + timedelta(seconds=1)
            session.update(updated)
            conn.send("written")
            time.sleep(120)                                          # killed here, session open
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(f"error: {type(exc).__name__}: {exc}")


class StorageConformance:
    """The contract tests every ``Storage`` adapter passes. Subclass it and implement ``make_storage``
    (and ``reopen_storage`` if the adapter persists; ``shares_claims = True`` if its ``claim_due``
    really claims).

    The class name does not start with ``Test``, so pytest collects only the subclasses.
    """

    #: Seconds a blocked session waits in the timeout test (adapters with slow locks may raise it).
    lock_wait = 0.2

    #: Whether ``claim_due`` really claims, so that two owners get disjoint batches (adapters shared
    #: by several workers, such as PostgreSQL); the default of ``Storage`` claims nothing.
    shares_claims = False

    def make_storage(self, tmp_path) -> Storage:
        """Return a new, empty store that keeps its data under ``tmp_path`` (if it keeps files)."""
        raise NotImplementedError("subclasses of StorageConformance implement make_storage(tmp_path)")

    def reopen_storage(self, storage: Storage) -> Storage | None:
        """A second handle on the same data (a new process would open this), or None if the
        adapter does not persist; the persistence and crash-recovery tests are skipped then.
        The crash-recovery test calls it in a forked child: it must build a new handle (new
        connections), never reuse the parent's."""
        return None

    @pytest.fixture
    def storage(self, tmp_path):
        store = self.make_storage(tmp_path)
        yield store
        store.close()

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def put(storage: Storage, *instances: Instance) -> None:
        for instance in instances:
            with storage.session(instance.id) as session:
                session.insert(instance)

    @staticmethod
    def replace(storage: Storage, instance: Instance) -> None:
        with storage.session(instance.id) as session:
            session.runs()
            session.update(instance)

    @staticmethod
    def keys(instances) -> list[tuple[str, str]]:
        return [(i.id, i.run) for i in instances]

    @staticmethod
    def try_session_from_thread(storage: Storage, instance_id: str, timeout: float) -> BaseException | None:
        """Open and close a session of ``instance_id`` in another thread; return what it raised."""
        outcome: list[BaseException | None] = []

        def attempt() -> None:
            try:
                with storage.session(instance_id, timeout=timeout) as session:
                    session.runs()
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                outcome.append(exc)

        thread = threading.Thread(target=attempt)
        thread.start()
        thread.join(timeout + 10)
        assert outcome, "the session attempt in the other thread did not finish"
        return outcome[0]

    # -- empty store -------------------------------------------------------------------

    def test_empty_store_answers_empty(self, storage):
        assert storage.runs("conf::nothing") == []
        assert storage.query() == []
        assert storage.query(statuses={"waiting"}) == []
        assert storage.due(BASE + timedelta(days=3650)) == []
        assert storage.interrupted() == []

    # -- records ---------------------------------------------------------------------------

    def test_insert_then_runs_round_trip(self, storage):
        original = make_instance("conf::one", status="waiting", due_at=BASE + timedelta(hours=1))
        self.put(storage, original)
        (stored,) = storage.runs("conf::one")
        assert stored == original
        assert stored.to_dict() == original.to_dict()

    def test_exists_tells_whether_an_id_has_runs(self, storage):
        assert not storage.exists("conf::one")
        self.put(storage, make_instance("conf::one"))
        assert storage.exists("conf::one")
        assert not storage.exists("conf::two")

    def test_every_status_round_trips(self, storage):
        made = [make_instance(f"conf::s{n}", seq=n, status=s)
                for n, s in enumerate(("pending", "running", "waiting", "completed", "failed", "cancelled"))]
        self.put(storage, *made)
        for instance in made:
            assert storage.runs(instance.id) == [instance]

    def test_runs_gives_copies(self, storage):
        self.put(storage, make_instance("conf::one"))
        first = storage.runs("conf::one")[0]
        first.status = "failed"
        first.context.initial["n"] = 99
        first.history.clear()
        again = storage.runs("conf::one")[0]
        assert again == make_instance("conf::one")

    def test_insert_of_an_existing_run_is_refused(self, storage):
        instance = make_instance("conf::one", status="waiting")
        self.put(storage, instance)
        with pytest.raises(StorageError):
            self.put(storage, finish(instance))
        assert storage.runs("conf::one") == [instance]

    def test_update_replaces(self, storage):
        instance = make_instance("conf::one", status="waiting", wait_kind="event")
        self.put(storage, instance)
        done = finish(instance)
        self.replace(storage, done)
        assert storage.runs("conf::one") == [done]

    def test_updates_in_one_session_keep_the_last(self, storage):
        instance = make_instance("conf::one", status="running")
        with storage.session("conf::one") as session:
            session.insert(instance)
            for n in range(3):
                instance = instance.copy()
                instance.runtime_metadata["step"] = n
                session.update(instance)
            assert session.runs() == [instance]
        assert storage.runs("conf::one") == [instance]

    def test_session_sees_its_own_writes(self, storage):
        instance = make_instance("conf::one", status="waiting", wait_kind="event")
        with storage.session("conf::one") as session:
            assert session.runs() == []
            session.insert(instance)
            assert session.runs() == [instance]
            session.update(finish(instance))
            assert [r.status for r in session.runs()] == ["completed"]

    def test_runs_newest_first(self, storage):
        old = make_instance("conf::one", seq=1, status="completed")
        mid = make_instance("conf::one", seq=2, status="failed")
        new = make_instance("conf::one", seq=3, status="waiting", wait_kind="event")
        self.put(storage, mid, new, old)  # insertion order is not the order of runs
        assert storage.runs("conf::one") == [new, mid, old]

    def test_runs_are_kept_per_id(self, storage):
        a = make_instance("conf::a", seq=1)
        ab = make_instance("conf::ab", seq=2)
        other_key = make_instance("other::a", seq=3)
        self.put(storage, a, ab, other_key)
        assert storage.runs("conf::a") == [a]
        assert storage.runs("conf::ab") == [ab]
        assert storage.runs("other::a") == [other_key]

    def test_scope_none_ids_with_suffix(self, storage):
        one = make_instance("conf::x::0badcafe", seq=1, status="waiting", wait_kind="event")
        two = make_instance("conf::x::deadbeef", seq=2, status="waiting", wait_kind="event")
        self.put(storage, one, two)
        assert storage.runs("conf::x::0badcafe") == [one]
        assert self.keys(storage.query(statuses={"waiting"})) == self.keys([two, one])
        assert storage.query(instance_id="conf::x::deadbeef") == [two]

    def test_persists_across_handles(self, storage):
        waiting = make_instance("conf::one", seq=1, status="waiting", due_at=BASE)
        running = make_instance("conf::two", seq=2, status="running")
        self.put(storage, waiting, running)
        other = self.reopen_storage(storage)
        if other is None:
            pytest.skip("this adapter does not persist beyond its handle")
        try:
            assert other.runs("conf::one") == [waiting]
            assert other.query(statuses={"waiting", "running"}) == [running, waiting]
            assert other.due(BASE) == [RunRef(waiting.id, waiting.run)]
            assert other.interrupted() == [RunRef(running.id, running.run)]
        finally:
            other.close()

    # -- sessions ------------------------------------------------------------------------

    def test_session_is_exclusive(self, storage):
        with storage.session("conf::one"):
            error = self.try_session_from_thread(storage, "conf::one", timeout=0)
            assert isinstance(error, StorageError), error
        assert self.try_session_from_thread(storage, "conf::one", timeout=0) is None

    def test_blocked_session_times_out(self, storage):
        with storage.session("conf::one"):
            started = time.monotonic()
            error = self.try_session_from_thread(storage, "conf::one", timeout=self.lock_wait)
            waited = time.monotonic() - started
        assert isinstance(error, StorageError), error
        assert waited >= self.lock_wait * 0.9

    def test_blocked_session_gets_in_once_released(self, storage):
        entered = threading.Event()
        outcome: list[object] = []

        def second() -> None:
            try:
                with storage.session("conf::one", timeout=10) as session:
                    outcome.append(self.keys(session.runs()))
            except BaseException as exc:  # noqa: BLE001
                outcome.append(exc)

        instance = make_instance("conf::one")
        with storage.session("conf::one") as session:
            thread = threading.Thread(target=second)
            thread.start()
            entered.wait(0.1)
            assert outcome == []  # still blocked
            session.insert(instance)
        thread.join(15)
        assert outcome == [self.keys([instance])]

    def test_sessions_of_other_ids_are_independent(self, storage):
        with storage.session("conf::one"):
            assert self.try_session_from_thread(storage, "conf::two", timeout=0) is None
            assert self.try_session_from_thread(storage, "other::one", timeout=0) is None

    def test_session_is_released_after_an_exception(self, storage):
        with pytest.raises(RuntimeError):
            with storage.session("conf::one"):
                raise RuntimeError("inside")
        assert self.try_session_from_thread(storage, "conf::one", timeout=0) is None

    def test_read_modify_write_loses_no_update(self, storage):
        instance = make_instance("conf::counter", status="running")
        instance.runtime_metadata["count"] = 0
        self.put(storage, instance)
        threads, rounds = 4, 10
        errors: list[BaseException] = []

        def bump() -> None:
            try:
                for _ in range(rounds):
                    with storage.session("conf::counter", timeout=30) as session:
                        (current,) = session.runs()
                        current.runtime_metadata["count"] += 1
                        session.update(current)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        workers = [threading.Thread(target=bump) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert errors == []
        assert storage.runs("conf::counter")[0].runtime_metadata["count"] == threads * rounds

    # -- queries ---------------------------------------------------------------------------

    @pytest.fixture
    def populated(self, storage):
        """Nine runs over three ids, two workflows, two versions and every status."""
        made = {
            "a_done": make_instance("conf::a", seq=1, status="completed"),
            "a_wait": make_instance("conf::a", seq=7, status="waiting", wait_kind="event"),
            "b_fail": make_instance("conf::b", seq=2, status="failed", version=2),
            "b_wait": make_instance("conf::b", seq=5, status="waiting", version=2, wait_kind="event"),
            "c_run": make_instance("conf::c", seq=3, status="running", workflow="conformance_other"),
            "c_cancel": make_instance("conf::c", seq=4, status="cancelled", workflow="conformance_other"),
            "d_pend": make_instance("conf::d", seq=6, status="pending", version=2),
            "e_done": make_instance("other::e", seq=8, status="completed", workflow="conformance_other",
                                    version=2),
            "f_wait": make_instance("other::f", seq=9, status="waiting", workflow="conformance_other",
                                    wait_kind="event"),
        }
        self.put(storage, *made.values())
        return storage, made

    def expect(self, made: dict, names: list[str]) -> list[tuple[str, str]]:
        """The (id, run) keys of ``names``, newest first."""
        return self.keys(sorted((made[n] for n in names), key=lambda i: i.run, reverse=True))

    def test_query_everything_newest_first(self, populated):
        storage, made = populated
        assert self.keys(storage.query()) == self.expect(made, list(made))
        assert storage.query() == sorted(made.values(), key=lambda i: i.run, reverse=True)

    def test_query_by_statuses(self, populated):
        storage, made = populated
        assert self.keys(storage.query(statuses={"waiting"})) == self.expect(made, ["a_wait", "b_wait", "f_wait"])
        assert self.keys(storage.query(statuses=["pending", "running"])) == self.expect(made, ["c_run", "d_pend"])
        assert self.keys(storage.query(statuses={"completed", "failed", "cancelled"})) == self.expect(
            made, ["a_done", "b_fail", "c_cancel", "e_done"])
        assert storage.query(statuses=set()) == []

    def test_query_by_workflow(self, populated):
        storage, made = populated
        assert self.keys(storage.query(workflow="conformance_other")) == self.expect(
            made, ["c_run", "c_cancel", "e_done", "f_wait"])
        assert storage.query(workflow="no_such_flow") == []

    def test_query_by_instance_id(self, populated):
        storage, made = populated
        assert self.keys(storage.query(instance_id="conf::a")) == self.expect(made, ["a_done", "a_wait"])
        assert self.keys(storage.query(instance_id="other::e")) == self.expect(made, ["e_done"])
        assert storage.query(instance_id="conf::zzz") == []

    def test_query_by_version(self, populated):
        storage, made = populated
        assert self.keys(storage.query(version=2)) == self.expect(made, ["b_fail", "b_wait", "d_pend", "e_done"])
        assert storage.query(version=3) == []

    def test_query_filters_combine_with_and(self, populated):
        storage, made = populated
        assert self.keys(storage.query(statuses={"waiting"}, workflow=WORKFLOW)) == self.expect(
            made, ["a_wait", "b_wait"])
        assert self.keys(storage.query(statuses={"waiting"}, workflow=WORKFLOW, version=2)) == self.expect(
            made, ["b_wait"])
        assert self.keys(storage.query(instance_id="conf::b", statuses={"failed"})) == self.expect(made, ["b_fail"])
        assert self.keys(storage.query(instance_id="conf::c", workflow="conformance_other", version=1,
                                       statuses={"running", "cancelled"})) == self.expect(made, ["c_run", "c_cancel"])
        assert storage.query(instance_id="conf::a", version=2) == []
        assert storage.query(workflow="conformance_other", statuses={"failed"}) == []

    def test_query_limit_keeps_the_newest(self, populated):
        storage, made = populated
        everything = self.expect(made, list(made))
        assert self.keys(storage.query(limit=3)) == everything[:3]
        assert self.keys(storage.query(limit=1, statuses={"waiting"})) == self.expect(made, ["f_wait"])
        assert self.keys(storage.query(limit=100)) == everything
        assert self.keys(storage.query(limit=1, instance_id="conf::b")) == self.expect(made, ["b_wait"])

    def test_status_change_moves_the_run_between_queries(self, storage):
        instance = make_instance("conf::one", status="waiting", wait_kind="event")
        self.put(storage, instance)
        assert self.keys(storage.query(statuses={"waiting"})) == self.keys([instance])
        self.replace(storage, finish(instance))
        assert storage.query(statuses={"waiting"}) == []
        assert storage.query(statuses={"completed"}) == [finish(instance)]
        assert storage.query(statuses={"waiting"}, instance_id="conf::one") == []

    # -- timers and recovery ------------------------------------------------------------------

    def test_due_returns_runs_whose_time_has_come(self, storage):
        at = BASE + timedelta(hours=1)
        early = make_instance("conf::early", seq=1, status="waiting", due_at=at - timedelta(minutes=1))
        exact = make_instance("conf::exact", seq=2, status="waiting", due_at=at)
        later = make_instance("conf::later", seq=3, status="waiting", due_at=at + timedelta(microseconds=1))
        retry = make_instance("conf::retry", seq=4, status="waiting", due_at=at - timedelta(hours=5),
                              wait_kind="retry")
        event = make_instance("conf::event", seq=5, status="waiting", wait_kind="event")
        self.put(storage, early, exact, later, retry, event)
        ref = lambda i: RunRef(i.id, i.run)  # noqa: E731
        assert set(storage.due(at)) == {ref(early), ref(exact), ref(retry)}
        assert set(storage.due(at - timedelta(hours=6))) == set()
        assert set(storage.due(at + timedelta(days=1))) == {ref(early), ref(exact), ref(later), ref(retry)}

    def test_due_compares_instants_not_time_zones(self, storage):
        at = BASE + timedelta(hours=1)
        instance = make_instance("conf::one", status="waiting", due_at=at)
        self.put(storage, instance)
        east = timezone(timedelta(hours=5))
        west = timezone(timedelta(hours=-8))
        assert storage.due(at.astimezone(east)) == [RunRef(instance.id, instance.run)]
        assert storage.due((at - timedelta(seconds=1)).astimezone(west)) == []

    def test_due_forgets_a_run_that_no_longer_waits(self, storage):
        instance = make_instance("conf::one", status="waiting", due_at=BASE)
        self.put(storage, instance)
        assert storage.due(BASE) == [RunRef(instance.id, instance.run)]
        self.replace(storage, finish(instance))
        assert storage.due(BASE + timedelta(days=1)) == []

    def test_due_follows_a_moved_timer(self, storage):
        instance = make_instance("conf::one", status="waiting", due_at=BASE)
        self.put(storage, instance)
        moved = instance.copy()
        moved.waits["pause"]["due_at"] = (BASE + timedelta(hours=2)).isoformat()
        self.replace(storage, moved)
        assert storage.due(BASE + timedelta(hours=1)) == []
        assert storage.due(BASE + timedelta(hours=2)) == [RunRef(instance.id, instance.run)]

    def test_interrupted_returns_pending_and_running_runs(self, populated):
        storage, made = populated
        assert set(storage.interrupted()) == {RunRef(made[n].id, made[n].run) for n in ("c_run", "d_pend")}

    def test_interrupted_forgets_a_finished_run(self, storage):
        instance = make_instance("conf::one", status="running")
        self.put(storage, instance)
        assert storage.interrupted() == [RunRef(instance.id, instance.run)]
        self.replace(storage, finish(instance))
        assert storage.interrupted() == []

    # -- uniqueness (every case of the rule, on insert and on update) ------------------------

    @pytest.mark.parametrize("case", UNIQUENESS_CASES, ids=_case_id)
    def test_uniqueness_on_insert(self, storage, case):
        first, second = uniqueness_pair(case)
        self.put(storage, first)
        with storage.session(first.id) as session:
            if case[-1]:
                with pytest.raises(AlreadyRunning) as refused:
                    session.insert(second)
                assert refused.value.instance_id == first.id
                assert session.runs() == [first]                     # nothing written
            else:
                session.insert(second)
                assert session.runs() == [second, first]
        assert storage.runs(first.id) == ([first] if case[-1] else [second, first])

    @pytest.mark.parametrize("case", UNIQUENESS_CASES, ids=_case_id)
    def test_uniqueness_on_update(self, storage, case):
        first, finished = uniqueness_pair(case, second_status="completed")
        _, revived = uniqueness_pair(case)                           # the same run, active again
        assert revived.run == finished.run
        self.put(storage, first, finished)                           # a finished run never conflicts
        with storage.session(first.id) as session:
            if case[-1]:
                with pytest.raises(AlreadyRunning) as refused:
                    session.update(revived)
                assert refused.value.instance_id == first.id
                assert session.runs() == [finished, first]           # the earlier record stays
            else:
                session.update(revived)
        assert storage.runs(first.id) == ([finished, first] if case[-1] else [revived, first])
        assert storage.query(instance_id=first.id, statuses={"waiting"}) == (
            [first] if case[-1] else [revived, first])

    @pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
    def test_finished_runs_never_conflict(self, storage, status):
        # global scope, one workflow, one version: the strictest case
        old = make_instance("conf::f", seq=1, status=status, scope="global")
        active = make_instance("conf::f", seq=2, status="waiting", wait_kind="event", scope="global")
        newer_finished = make_instance("conf::f", seq=3, status=status, scope="global", workflow="conformance_other")
        with storage.session("conf::f") as session:
            session.insert(old)
            session.insert(active)                                   # beside a finished run
            session.insert(newer_finished)                           # a finished run beside an active one
            session.update(active)                                   # an active run rewritten beside them
        assert storage.runs("conf::f") == [newer_finished, active, old]
        blocked = make_instance("conf::f", seq=4, status="pending", scope="global", workflow="conformance_other")
        with storage.session("conf::f") as session:
            with pytest.raises(AlreadyRunning):
                session.insert(blocked)
            session.update(finish(active))                           # once it finishes, the id is free
            session.insert(blocked)
        assert [r.status for r in storage.runs("conf::f")] == ["pending", status, "completed", status]

    def test_uniqueness_needs_no_workflow_definition(self, storage):
        # the stored scope decides: these workflow names are defined nowhere
        held = make_instance("conf::g", seq=1, status="running", workflow="nowhere_defined_a", scope="global")
        other = make_instance("conf::g", seq=2, status="waiting", workflow="nowhere_defined_b", version=7,
                              wait_kind="event", scope="version")
        self.put(storage, held)
        with pytest.raises(AlreadyRunning):
            self.put(storage, other)
        assert storage.runs("conf::g") == [held]
        assert storage.runs("conf::g")[0].scope == "global"

    # -- must_exist and busy sessions ----------------------------------------------------------

    def test_must_exist_on_an_id_without_runs_leaves_nothing(self, storage):
        try:
            with storage.session("conf::ghost", must_exist=True) as session:
                assert session.runs() == []
        except InstanceNotFound as exc:
            assert exc.instance_id == "conf::ghost"
        assert not storage.exists("conf::ghost")
        assert storage.runs("conf::ghost") == []
        assert storage.query() == []
        assert storage.query(instance_id="conf::ghost") == []
        assert self.try_session_from_thread(storage, "conf::ghost", timeout=0) is None

    def test_must_exist_on_an_existing_id_opens_the_session(self, storage):
        instance = make_instance("conf::one", status="waiting", wait_kind="event")
        self.put(storage, instance)
        with storage.session("conf::one", must_exist=True) as session:
            assert session.runs() == [instance]
            session.update(finish(instance))
        assert storage.runs("conf::one") == [finish(instance)]

    def test_a_busy_session_raises_instance_busy(self, storage):
        with storage.session("conf::one"):
            error = self.try_session_from_thread(storage, "conf::one", timeout=0)
        assert isinstance(error, InstanceBusy), error
        assert error.instance_id == "conf::one"
        assert "busy" in str(error)

    # -- busy instances and their mail (SPEC §6) ------------------------------------------------

    def test_busy_tells_who_holds_an_id(self, storage):
        self.put(storage, make_instance("conf::one"))
        assert storage.busy("conf::one") is None
        with storage.session("conf::one") as session:
            assert storage.busy("conf::one") == {}  # held, nothing announced
            session.announce({"step": "charge", "workflow": "conf", "pid": 7})
            assert storage.busy("conf::one") == {"step": "charge", "workflow": "conf", "pid": 7}
            assert storage.busy("conf::two") is None
        assert storage.busy("conf::one") is None  # the note ends with the session
        with storage.session("conf::one"):
            assert storage.busy("conf::one") == {}  # and is not shown by the next holder

    def test_posted_mail_waits_for_the_next_session_oldest_first(self, storage):
        assert not storage.has_mail("conf::one") and storage.mailboxes() == []
        first = storage.post("conf::one", {"kind": "event", "event": "a"})
        second = storage.post("conf::one", {"kind": "event", "event": "b", "data": {"n": [1, "é"]}})
        assert first != second
        assert storage.has_mail("conf::one") and not storage.has_mail("conf::two")
        assert storage.mailboxes() == ["conf::one"]
        with storage.session("conf::one") as session:
            mail = session.mail()
            assert [m["id"] for m in mail] == [first, second]
            assert mail[1]["event"] == "b" and mail[1]["data"] == {"n": [1, "é"]}
            session.drop_mail([first])
            assert [m["id"] for m in session.mail()] == [second]
            session.drop_mail([second, "no-such-message"])
            assert session.mail() == []
        assert not storage.has_mail("conf::one") and storage.mailboxes() == []

    def test_mail_can_be_posted_while_the_id_is_held(self, storage):
        with storage.session("conf::one") as session:
            posted = storage.post("conf::one", {"kind": "cancel"})
            assert [m["id"] for m in session.mail()] == [posted]

    def test_mail_persists_across_handles(self, storage):
        posted = storage.post("conf::one", {"kind": "cancel"})
        other = self.reopen_storage(storage)
        if other is None:
            pytest.skip("the adapter does not persist")
        try:
            assert other.mailboxes() == ["conf::one"]
            with other.session("conf::one") as session:
                assert [m["id"] for m in session.mail()] == [posted]
        finally:
            other.close()

    # -- schedules (SPEC §10) -------------------------------------------------------------------

    def test_schedule_state_round_trips_under_an_exclusive_session(self, storage):
        assert storage.schedule_states() == {}
        with storage.schedule_session("flow-0123456789") as held:
            assert held.state() is None
            held.save({"since": "2026-01-01T00:00:00+00:00", "last": None})
            outcome: list = []
            thread = threading.Thread(target=lambda: self._try_schedule(storage, outcome))
            thread.start()
            thread.join(10)
            assert isinstance(outcome[0], InstanceBusy), outcome
            held.save({"since": "2026-01-01T00:00:00+00:00", "last": "2026-01-01T09:00:00+00:00"})
        with storage.schedule_session("flow-0123456789") as held:
            assert held.state() == {"since": "2026-01-01T00:00:00+00:00", "last": "2026-01-01T09:00:00+00:00"}
        assert storage.schedule_states() == {
            "flow-0123456789": {"since": "2026-01-01T00:00:00+00:00", "last": "2026-01-01T09:00:00+00:00"}}

    @staticmethod
    def _try_schedule(storage, outcome: list) -> None:
        try:
            with storage.schedule_session("flow-0123456789", 0):
                outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            outcome.append(exc)

    def test_schedule_state_persists_across_handles(self, storage):
        with storage.schedule_session("flow-aa") as held:
            held.save({"last": "x"})
        other = self.reopen_storage(storage)
        if other is None:
            pytest.skip("the adapter does not persist")
        try:
            assert other.schedule_states() == {"flow-aa": {"last": "x"}}
        finally:
            other.close()

    # -- sharing work among workers: claims, batches, waiting -----------------------------------

    @pytest.fixture
    def due_store(self, storage):
        """Five runs due at ``AT``, one due later, one waiting for an event."""
        due = [make_instance(f"conf::due{n}", seq=n, status="waiting", due_at=AT - timedelta(minutes=n),
                             wait_kind="retry" if n % 2 else "timer") for n in range(5)]
        later = make_instance("conf::later", seq=10, status="waiting", due_at=AT + timedelta(minutes=1))
        event = make_instance("conf::event", seq=11, status="waiting", wait_kind="event")
        self.put(storage, *due, later, event)
        return storage, {RunRef(i.id, i.run) for i in due}

    def test_claim_due_returns_only_due_runs_and_at_most_limit(self, due_store):
        storage, due = due_store
        claimed = storage.claim_due(AT, 3, "owner-one")
        assert len(claimed) == 3 and len(set(claimed)) == 3
        assert set(claimed) <= due
        assert isinstance(storage.release_claims("owner-one"), int)
        assert storage.claim_due(AT - timedelta(hours=1), 10, "owner-two") == []   # nothing due yet
        assert storage.claim_due(AT, 0, "owner-three") == []

    def test_due_batches_yields_every_due_run_exactly_once(self, due_store):
        storage, due = due_store
        walked = list(storage.due_batches(AT, 2))
        assert sorted(walked) == sorted(due)
        again = list(storage.due_batches(AT, 100))                  # the walk left nothing claimed
        assert sorted(again) == sorted(due)

    def test_release_claims_returns_how_many(self, due_store):
        storage, due = due_store
        assert storage.release_claims("nobody") == 0
        claimed = storage.claim_due(AT, 2, "owner-one")
        released = storage.release_claims("owner-one", claimed)
        assert isinstance(released, int) and not isinstance(released, bool)
        if self.shares_claims:
            assert released == len(claimed) == 2
            assert storage.release_claims("owner-one") == 0
        assert storage.release_claims("owner-one", []) == 0

    def test_two_owners_claim_disjoint_batches(self, due_store):
        if not self.shares_claims:
            pytest.skip("this adapter claims nothing (one host: shares_claims = False)")
        storage, due = due_store
        first = storage.claim_due(AT, 3, "owner-one")
        second = storage.claim_due(AT, 3, "owner-two")
        assert len(first) == 3 and len(second) == 2
        assert not set(first) & set(second)
        assert set(first) | set(second) == due
        assert storage.claim_due(AT, 3, "owner-three") == []
        assert storage.release_claims("owner-one") == 3
        assert set(storage.claim_due(AT, 10, "owner-three")) == set(first)

    def test_wait_for_work_returns_a_bool_soon(self, storage):
        started = time.monotonic()
        woke = storage.wait_for_work(0.05)
        assert isinstance(woke, bool)
        assert time.monotonic() - started < 2

    # -- crash recovery ------------------------------------------------------------------------


    def test_a_process_killed_inside_a_session_leaves_its_last_write_and_no_lock(self, storage):
        probe = self.reopen_storage(storage)
        if probe is None:
            pytest.skip("this adapter does not persist beyond its handle")
        probe.close()
        if "fork" not in multiprocessing.get_all_start_methods():
            pytest.skip("needs the fork start method")
        instance = make_instance("conf::crash", status="running")
        expected = instance.copy()
        expected.runtime_metadata["step"] = "second write"
        expected.updated_at = expected.updated_at + timedelta(seconds=1)
        ctx = multiprocessing.get_context("fork")
        parent_end, child_end = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_crash_child, args=(self, storage, instance, child_end), daemon=True)
        child.start()
        try:
            assert parent_end.poll(30), "the child did not write within 30 s"
            assert parent_end.recv() == "written"
            assert child.pid is not None
            with pytest.raises(StorageError):                        # the child holds the id
                with storage.session("conf::crash", timeout=0):
                    pass
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)
            assert child.exitcode == -signal.SIGKILL
        finally:
            if child.is_alive():
                child.kill()
                child.join(5)
        assert storage.runs("conf::crash") == [expected]             # the last record written
        assert RunRef(instance.id, instance.run) in storage.interrupted()
        started = time.monotonic()
        with storage.session("conf::crash", timeout=5) as session:   # the lock died with the child
            assert session.runs() == [expected]
        assert time.monotonic() - started < 5
