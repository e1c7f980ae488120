"""Properties of the padded distributed sampler over many (n, world size, batch size) cases."""

import itertools
from collections import Counter

import pytest

from lmm_lightning.data.sampler import PaddedDistributedSampler, global_batches, plan_rank, resolve_batch_size
from lmm_lightning.requests import GenerationSpec, Request, RequestType


def make_requests(n_ll: int, n_gen: int) -> list[Request]:
    requests = []
    for i in range(n_ll):
        requests.append(Request(len(requests), "t", i // 3, RequestType.LOGLIKELIHOOD, "c" * (i * 7 % 11), " x" * (i % 4), i % 3))
    for i in range(n_gen):
        spec = GenerationSpec(until=("\n",), max_new_tokens=8 if i % 3 else 16)
        requests.append(Request(len(requests), "g", i, RequestType.GENERATE_UNTIL, "q" * (i * 5 % 13), generation=spec))
    return requests


CASES = list(itertools.product([0, 1, 2, 5, 13, 40], [0, 1, 7], [1, 2, 3, 4, 8], [1, 3, 8]))


@pytest.mark.parametrize("n_ll,n_gen,world_size,batch_size", CASES)
def test_sampler_properties(n_ll, n_gen, world_size, batch_size):
    requests = make_requests(n_ll, n_gen)
    plans = [plan_rank(requests, batch_size, world_size, rank) for rank in range(world_size)]

    real = [uid for plan in plans for b in plan for uid, pad in zip(b.uids, b.padding) if not pad]
    assert sorted(real) == list(range(len(requests)))  # union = all, none twice

    kinds = lambda plan: Counter(
        (requests[b.uids[0]].request_type, requests[b.uids[0]].generation if requests[b.uids[0]].request_type is RequestType.GENERATE_UNTIL else None)
        for b in plan
    )
    assert all(kinds(plan) == kinds(plans[0]) for plan in plans)  # same batches of each kind per rank
    assert len({len(plan) for plan in plans}) == 1
    for plan in plans:
        for batch in plan:
            assert len(batch.uids) <= batch_size
            assert len({requests[u].request_type for u in batch.uids}) == 1  # homogeneous
            assert len({requests[u].generation for u in batch.uids}) == 1
            if any(batch.padding):
                assert all(batch.padding) and len(batch.uids) == 1  # padding is flagged, never mixed
            lengths = [len(requests[u].context) for u in batch.uids]  # longest first
            assert lengths == sorted(lengths, reverse=True)


def test_batches_do_not_depend_on_world_size():
    requests = make_requests(40, 7)
    batches = [tuple(r.uid for r in b) for b in global_batches(requests, 4)]
    for world_size in (1, 2, 3, 8):
        dealt = {b.uids for rank in range(world_size) for b in plan_rank(requests, 4, world_size, rank) if not any(b.padding)}
        assert dealt == set(batches)


def test_remainder_goes_to_lower_ranks_and_padding_repeats_last_real_request():
    requests = make_requests(5, 0)  # 5 batches of 1 over 3 ranks: 2, 2, 1 + 1 padding
    plans = [plan_rank(requests, 1, 3, rank) for rank in range(3)]
    assert [sum(not any(b.padding) for b in p) for p in plans] == [2, 2, 1]
    assert plans[2][-1].padding == (True,) and plans[2][-1].uids == plans[2][0].uids


def test_batch_size_per_request_type():
    requests = make_requests(9, 4)
    plan = plan_rank(requests, {"loglikelihood": 9, "generate_until": 1}, 1, 0)
    assert [len(b.uids) for b in plan] == [9, 1, 1, 1, 1]


def test_sampler_is_a_distributed_sampler_yielding_its_plan():
    from torch.utils.data import DistributedSampler

    requests = make_requests(13, 3)
    sampler = PaddedDistributedSampler(requests, requests, 4, num_replicas=2, rank=1)
    assert isinstance(sampler, DistributedSampler)
    assert list(sampler) == plan_rank(requests, 4, 2, 1) and len(sampler) == len(sampler.plan)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_done_batches_are_skipped_and_the_rest_keep_their_composition(world_size):
    requests = make_requests(40, 7)
    batches = global_batches(requests, 4)
    done = {r.uid for b in batches[::2] for r in b}  # every other batch answered by an earlier run
    plans = [plan_rank(requests, 4, world_size, rank, done) for rank in range(world_size)]
    real = [b.uids for p in plans for b in p if not any(b.padding)]
    assert set(real) == {tuple(r.uid for r in b) for b in batches[1::2]}
    assert len({len(p) for p in plans}) == 1


def test_fully_answered_run_still_runs_one_padding_batch_per_rank():
    requests = make_requests(5, 2)
    plans = [plan_rank(requests, 4, 2, rank, {r.uid for r in requests}) for rank in range(2)]
    assert all(len(p) == 1 and p[0].padding == (True,) for p in plans)


def test_choices_of_a_question_stay_in_one_batch():
    requests = [Request(i, "t", i // 4, RequestType.LOGLIKELIHOOD, f"question {i // 4:02d}?", f" choice {i % 4}" * (1 + i % 3)) for i in range(40)]
    for batch in global_batches(requests, 8):
        assert len({r.doc_id for r in batch}) == 2


def test_resolve_batch_size_probes_the_longest_request_of_each_auto_type():
    requests = make_requests(5, 4)
    probed = []
    probe = lambda request: probed.append(request.uid) or 8
    resolved = resolve_batch_size(requests, {"loglikelihood": "auto", "generate_until": 3}, probe, all_min=lambda size: size - 1)
    assert resolved == {"loglikelihood": 7, "generate_until": 3}  # the smallest over ranks is what counts
    longest = max((r for r in requests if r.request_type is RequestType.LOGLIKELIHOOD), key=lambda r: (r.length, -r.uid))
    assert probed == [longest.uid]
    assert resolve_batch_size(requests[:5], "auto", probe, all_min=lambda size: size) == {"loglikelihood": 8}
    assert resolve_batch_size(requests, 2, probe=None, all_min=None) == 2  # nothing to probe
