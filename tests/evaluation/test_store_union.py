"""Resume across ranks that see different stores: the union of what they hold, each answer handed in by one
rank (the lowest holding it), through the final gather; and the fail-fast ring's view of a link."""

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmm_lightning.evaluation.failfast import GOODBYE, link_closed
from lmm_lightning.evaluation.gather import ResponseCollector
from lmm_lightning.evaluation.store import agree_across_ranks, holder_flags, read_flags
from lmm_lightning.requests import Response


def agree(ranks: list[tuple[bool, set[int], set[int]]], n: int = 10):
    """What the all-reduce gives, for ranks holding (locked, stored, cached)."""
    world = len(ranks)
    flags = [holder_flags(locked, stored, cached, rank, world, n) for rank, (locked, stored, cached) in enumerate(ranks)]
    return read_flags(torch.stack(flags).min(dim=0).values, world)


def test_the_union_of_what_ranks_hold_each_uid_to_the_lowest_holder():
    agreed = agree([(True, {0, 1}, set()), (True, {1, 2, 3}, set()), (True, {3, 7}, set())])
    assert agreed.locked
    assert agreed.holders == {0: 0, 1: 0, 2: 1, 3: 1, 7: 2}
    assert agreed.held_by(0) == [0, 1] and agreed.held_by(1) == [2, 3] and agreed.held_by(2) == [7]
    assert sum(len(agreed.held_by(r)) for r in range(3)) == len(agreed.holders)  # each counted once


def test_a_shared_folder_leaves_every_answer_with_rank_0():
    same = {0, 2, 4, 5}
    agreed = agree([(True, same, set())] * 4)
    assert agreed.holders == dict.fromkeys(same, 0) and agreed.from_cache == frozenset()


def test_the_run_store_is_preferred_to_the_cache_on_one_rank_and_the_lower_rank_wins_over_the_source():
    agreed = agree([(True, {1}, {1, 2, 5}), (True, {5, 6}, {6, 8})])
    assert agreed.holders == {1: 0, 2: 0, 5: 0, 6: 1, 8: 1}
    assert agreed.from_cache == {2, 5, 8}  # 1 and 6 are in their holder's run store too


def test_a_rank_that_does_not_store_takes_part_and_holds_nothing():
    agreed = agree([(True, set(), set()), (True, {3}, set()), (True, set(), set())])
    assert agreed.holders == {3: 1} and agreed.held_by(0) == [] and agreed.held_by(2) == []


def test_one_rank_not_holding_its_lock_refuses_every_rank():
    assert not agree([(True, {1}, set()), (False, set(), set())]).locked


def test_one_process_holds_everything_it_found():
    agreed = agree_across_ranks(True, {0, 4}, {4, 9}, 10, torch.device("cpu"))
    assert agreed.locked and agreed.holders == {0: 0, 4: 0, 9: 0} and agreed.from_cache == {9}


def test_the_collector_keeps_resumed_answers_apart_from_computed_ones():
    collector = ResponseCollector()
    collector.update([Response(4, text="Rome"), Response(5, logprob=-2.0, is_greedy=False)], [False, False], resumed=True)
    collector.update([Response(0, logprob=-1.0, is_greedy=True), Response(1, text="Oslo")], [False, True])
    gathered = collector.compute()
    assert [(r.uid, p) for r, p in gathered.pairs] == [(0, False), (1, True)]
    assert gathered.resumed == [Response(4, text="Rome"), Response(5, logprob=-2.0, is_greedy=False)]


# --- three real gloo processes: each hands in what it holds; rank 2 holds and computes nothing ---------------
STORES = {0: {0: "a", 1: "b"}, 1: {1: "b", 2: "c", 3: "d"}, 2: {}}  # rank -> the stored answers it sees
COMPUTED = {0: [4], 1: [5], 2: []}


def _rank(rank: int, world: int, port: int, folder: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        found = {uid: Response(uid, text=text) for uid, text in STORES[rank].items()}
        agreed = agree_across_ranks(True, set(found), set(), 6, torch.device("cpu"))
        collector = ResponseCollector()
        collector.update([found[uid] for uid in agreed.held_by(rank)], [False] * len(agreed.held_by(rank)), resumed=True)
        if COMPUTED[rank]:
            collector.update([Response(uid, text=f"new {uid}") for uid in COMPUTED[rank]], [False] * len(COMPUTED[rank]))
        gathered = collector.compute()
        lines = [f"{r.uid} {r.text} computed" for r, _ in gathered.pairs] + [f"{r.uid} {r.text} resumed" for r in gathered.resumed]
        Path(folder, f"rank{rank}.txt").write_text("\n".join(sorted(lines)) + f"\ndone {sorted(agreed.holders)}\n")
    finally:
        dist.destroy_process_group()


def test_each_rank_hands_in_what_it_holds_once_through_the_gather(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(_rank, args=(3, port, str(tmp_path)), nprocs=3, start_method="fork", join=True)  # fork: no re-import per rank
    expected = "\n".join(sorted([
        "0 a resumed", "1 b resumed", "2 c resumed", "3 d resumed", "4 new 4 computed", "5 new 5 computed",
    ])) + "\ndone [0, 1, 2, 3]\n"
    for rank in range(3):  # every rank agrees on the skipped requests, and gets every answer once
        assert (tmp_path / f"rank{rank}.txt").read_text() == expected


# --- the ring: a killed or exited rank's end closes; one that ends in order says goodbye first -------------
def test_a_link_tells_a_live_rank_from_one_gone_and_one_that_said_goodbye():
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    assert link_closed(ours) is None  # alive, silent
    theirs.close()  # the kernel closes a killed process's sockets
    assert link_closed(ours) is True
    ours.close()

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.sendall(GOODBYE)
    theirs.close()
    assert link_closed(ours) is False
    ours.close()
