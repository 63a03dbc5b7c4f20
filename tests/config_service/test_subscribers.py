"""The subscriber registry: which streams a report lands on, and what closing a stream leaves."""

from __future__ import annotations

from config_service.rbac import Role
from config_service.subscribers import ProviderIssue, SubscriberRegistry


def test_a_report_lands_on_every_stream_of_its_node_and_principal_only() -> None:
    """An ACK marks the reporter's streams with that node id, not another principal's same-named node nor its other nodes."""
    registry = SubscriberRegistry()
    mine = [registry.add("node-a", Role.BRIDGE, "p1", "ipv4:1") for _ in range(2)]
    other_node = registry.add("node-b", Role.BRIDGE, "p1", "ipv4:2")
    other_principal = registry.add("node-a", Role.PROXY, "p2", "ipv4:3")
    assert registry.report("node-a", "p1", "7", True, [], "")
    assert [s.version_acked for s in mine] == ["7", "7"]
    assert other_node.version_acked == other_principal.version_acked == ""
    issues = [ProviderIssue("openai", "bad key")]
    assert registry.report("node-a", "p2", "8", False, issues, "detail")
    assert other_principal.version_rejected == "8"
    assert other_principal.errors == issues
    assert [s.version_rejected for s in mine] == ["", ""]


def test_a_report_after_its_streams_closed_finds_none() -> None:
    """Once a node's streams are gone a report matches nothing, and a stream of the same node opened later is found again."""
    registry = SubscriberRegistry()
    first, second = (registry.add("node-a", Role.BRIDGE, "p1", "ipv4:1") for _ in range(2))
    registry.remove(first)
    assert registry.report("node-a", "p1", "3", True, [], "")
    assert second.version_acked == "3"
    registry.remove(second)
    registry.remove(second)  # twice: a stream's cleanup may run after an earlier one
    assert not registry.report("node-a", "p1", "4", True, [], "")
    assert registry.count_for("p1") == 0
    again = registry.add("node-a", Role.BRIDGE, "p1", "ipv4:1")
    assert registry.report("node-a", "p1", "5", True, [], "")
    assert again.version_acked == "5"
    assert registry.all() == [again]
