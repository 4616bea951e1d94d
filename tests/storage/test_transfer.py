"""Copying runs between stores: verified, repeatable, and refused whole on a conflict."""

from __future__ import annotations

import pytest

from heph.errors import CopyConflict
from heph.runtime.storage.jsonfile import JsonFileStorage
from heph.runtime.storage.memory import MemoryStorage
from heph.runtime.storage.transfer import checksums, copy_runs, store_checksum
from heph.testing.conformance import make_instance


def filled(storage, *instances):
    for instance in instances:
        with storage.session(instance.id) as session:
            session.insert(instance)
    return storage


def test_copy_is_verified_and_can_be_repeated(tmp_path):
    source = filled(JsonFileStorage(tmp_path / "a"), make_instance("t::one"),
                    make_instance("t::two", status="waiting", wait_kind="event"))
    target = MemoryStorage()
    report = copy_runs(source, target)
    assert (report["runs"], report["ids"], report["copied"], report["verified"]) == (2, 2, 2, 2)
    assert checksums(target) == checksums(source)
    assert report["checksum"] == store_checksum(checksums(source))
    again = copy_runs(source, target)
    assert (again["copied"], again["already_present"]) == (0, 2)


def test_another_active_run_in_the_target_refuses_the_whole_copy(tmp_path):
    source = filled(MemoryStorage(), make_instance("t::aaa"),
                    make_instance("t::busy", seq=1, status="waiting", wait_kind="event"))
    target = filled(MemoryStorage(), make_instance("t::busy", seq=2, status="waiting", wait_kind="event"))
    before = checksums(target)
    with pytest.raises(CopyConflict, match="t::busy is active in the target under another run"):
        copy_runs(source, target)
    assert checksums(target) == before                      # nothing was copied, not even t::aaa


def test_a_different_run_under_the_same_id_and_run_refuses(tmp_path):
    mine = make_instance("t::same")
    theirs = make_instance("t::same", status="failed")
    assert mine.run == theirs.run
    target = filled(MemoryStorage(), theirs)
    with pytest.raises(CopyConflict, match="differs in the target"):
        copy_runs(filled(MemoryStorage(), mine), target)


def test_schedule_states_are_copied_and_a_different_one_refuses(tmp_path):
    source, target = JsonFileStorage(tmp_path / "a"), MemoryStorage()
    with source.schedule_session("rep-0123456789") as held:
        held.save({"since": "2026-01-01T00:00:00+00:00", "last": "2026-01-02T09:00:00+00:00"})
    assert copy_runs(source, target)["schedules"] == 1
    assert target.schedule_states() == source.schedule_states()
    assert copy_runs(source, target)["schedules"] == 0  # the same state: nothing to do
    with target.schedule_session("rep-0123456789") as held:
        held.save({"since": "2026-01-01T00:00:00+00:00", "last": "2026-01-03T09:00:00+00:00"})
    with pytest.raises(CopyConflict, match="schedule rep-0123456789 has another state"):
        copy_runs(source, target)
