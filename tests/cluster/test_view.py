"""Merging what members publish (``siplb.cluster.view``): calls, health, operator actions."""

from __future__ import annotations

from siplb.cluster import LeaveCause, Member, Membership, Ownership
from siplb.cluster.view import AdminAction, AdminVerb, ClusterView, HealthDecision, admin_key

A, B, C = Member("n1"), Member("n2"), Member("n3")


def _view(me: Member = A, live: tuple[Member, ...] = (A, B, C)) -> ClusterView:
    return ClusterView(Ownership(me, live))


def test_remote_calls_sum_the_live_others() -> None:
    view = _view()
    view.calls(A, {"sip:x": 5})
    view.calls(B, {"sip:x": 2, "sip:y": 1})
    view.calls(C, {"sip:x": 3, "sip:y": 0})
    assert view.remote_calls() == {"sip:x": 5, "sip:y": 1}
    assert view.remote_calls(B) == {"sip:x": 8}
    view.calls(B, {"sip:x": 1})  # a snapshot replaces, never adds
    assert view.remote_calls() == {"sip:x": 4}


def test_a_member_that_leaves_drops_out_at_once() -> None:
    clock = 0.0
    membership = Membership(A, dead_after=0.7)
    for member in (B, C):
        membership.heard(member, clock)
    view = ClusterView(membership.ownership())
    view.calls(B, {"sip:x": 2})
    view.calls(C, {"sip:x": 3})
    clock = 0.5
    membership.heard(B, clock)
    clock = 0.8
    assert [e.cause for e in membership.expire(clock)] == [LeaveCause.SILENT]  # C silent
    view.members_changed(membership.ownership())
    assert view.remote_calls() == {"sip:x": 2}
    view.calls(C, {"sip:x": 3})  # a late write from the dead member does not count
    assert view.remote_calls() == {"sip:x": 2}


def _owned_by(view: ClusterView, member: Member) -> str:
    return next(uri for n in range(100) if view.health_owner(uri := f"sip:pbx{n}") == member)


def test_health_follows_only_the_owner_newest_first() -> None:
    view = _view()
    uri = _owned_by(view, B)
    assert not view.decides(uri)
    down = HealthDecision("down", "probe timeout", B, 10.0)
    assert view.health(uri, HealthDecision("down", "x", C, 11.0)) is None  # not the owner
    assert view.health(uri, down) == down
    assert view.health(uri, down) is None  # seen
    assert view.health(uri, HealthDecision("up", "probe ok", B, 9.0)) is None  # older
    up = HealthDecision("up", "probe ok", B, 12.0)
    assert view.health(uri, up) == up
    assert view.followed(uri) == up


def test_health_moves_with_the_owner() -> None:
    view = _view()
    uri = _owned_by(view, B)
    view.health(uri, HealthDecision("down", "probe timeout", B, 100.0))
    view.members_changed(Ownership(A, (A, C)))  # B died
    new_owner = view.health_owner(uri)
    assert new_owner != B
    assert view.health(uri, HealthDecision("up", "late", B, 101.0)) is None
    # the new owner's clock may be behind the old one's: its decision still counts
    decision = HealthDecision("up", "probe ok", new_owner, 50.0)
    assert view.health(uri, decision) == decision


def test_a_member_leaving_moves_only_the_uris_it_owned() -> None:
    view = _view()
    uris = [f"sip:pbx{n}@10.0.0.{n % 250}" for n in range(3000)]
    before = {uri: view.health_owner(uri) for uri in uris}
    view.members_changed(Ownership(A, (A, B)))
    moved = {uri for uri in uris if view.health_owner(uri) != before[uri]}
    assert moved == {uri for uri in uris if before[uri] == C}


def test_admin_last_writer_wins() -> None:
    view = _view()
    key = admin_key("pbx", "sip:pbx1")
    assert key == "pbx|sip:pbx1"
    drain = AdminAction(AdminVerb.DRAIN, None, 10.0, B)
    assert view.admin(key, drain) == drain
    assert view.admin(key, drain) is None  # seen
    assert view.admin(key, AdminAction(AdminVerb.ENABLE, None, 9.0, C)) is None  # older
    tie = AdminAction(AdminVerb.WEIGHT, 5.0, 10.0, C)  # same stamp: the larger member wins
    assert view.admin(key, tie) == tie
    assert view.admin(key, AdminAction(AdminVerb.DISABLE, None, 10.0, A)) is None
    assert view.admin_actions() == {key: tie}


def test_every_member_ends_on_the_same_admin_action_in_any_order() -> None:
    actions = [
        AdminAction(AdminVerb.DRAIN, None, 10.0, B),
        AdminAction(AdminVerb.ENABLE, None, 11.0, A),
        AdminAction(AdminVerb.WEIGHT, 3.0, 11.0, C),
        AdminAction(AdminVerb.DISABLE, None, 10.5, C),
    ]
    ends = set()
    for shift in range(len(actions)):
        view = _view()
        for action in actions[shift:] + actions[:shift]:
            view.admin("s|u", action)
        ends.add(view.admin_actions()["s|u"])
    assert ends == {actions[2]}
