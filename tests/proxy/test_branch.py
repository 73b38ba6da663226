"""Via branches that name their owner (siplb.proxy.branch; docs/design.md section 3 step 5)."""

from __future__ import annotations

import pytest

from siplb.cluster import Member
from siplb.cluster import branch as cluster_branch
from siplb.proxy.branch import COOKIE, BranchMaker, owner_of


def test_branches_are_unique_and_carry_the_owner() -> None:
    maker = BranchMaker("n7", worker=3)
    branches = [maker.new() for _ in range(100)] + [maker.probe() for _ in range(100)]
    assert len(set(branches)) == 200
    for branch in branches:
        assert branch.startswith(COOKIE)  # RFC 3261 8.1.1.7
        assert owner_of(branch) == "n7.3"
        assert maker.is_ours(branch)


def test_probe_branches_are_told_apart() -> None:
    maker = BranchMaker("n1")
    assert maker.is_probe(maker.probe())
    assert not maker.is_probe(maker.new())


def test_stateless_branch_is_the_same_for_the_same_seed() -> None:
    maker = BranchMaker("n1")
    assert maker.stateless(b"z9hG4bKa/host:5060") == maker.stateless(b"z9hG4bKa/host:5060")
    assert maker.stateless(b"z9hG4bKa/host:5060") != maker.stateless(b"z9hG4bKb/host:5060")
    assert owner_of(maker.stateless(b"x")) == "n1.0"


def test_two_processes_make_different_branches() -> None:
    assert BranchMaker("n1").new() != BranchMaker("n1").new()


# (branch, owner it names)
OWNER_CASES = [
    ("z9hG4bK-n1.0-abc", "n1.0"),
    ("z9hG4bK-n2.5-pabc", "n2.5"),
    ("z9hG4bK-n1.0-s0123", "n1.0"),
    ("z9hG4bK776asdhds", None),  # a phone's branch
    ("z9hG4bK-", None),
    ("1234", None),
    ("", None),
]


@pytest.mark.parametrize(("branch", "owner"), OWNER_CASES)
def test_owner_of(branch: str, owner: str | None) -> None:
    assert owner_of(branch) == owner


def test_not_ours() -> None:
    maker = BranchMaker("n1")
    assert not maker.is_ours(None)
    assert not maker.is_ours(BranchMaker("n2").new())
    assert not maker.is_ours(BranchMaker("n1", worker=1).new())


def test_the_cluster_parser_reads_every_kind_of_branch() -> None:
    maker = BranchMaker("n7", worker=3)
    assert maker.member == Member("n7", 3)
    for branch in (maker.new(), maker.probe(), maker.keepalive(), maker.stateless(b"x")):
        assert cluster_branch.owner_of(branch) == Member("n7", 3)
        response = (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch="
            + branch.encode()
            + b";received=10.0.0.1\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n"
        )
        assert cluster_branch.response_owner(response) == Member("n7", 3)
