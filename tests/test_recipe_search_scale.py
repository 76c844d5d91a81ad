"""The search_scale recipe's comparison of a 1-process and a 2-process leaderboard."""

from lnas.benchmarks.search_scale import same_leaderboard


def _row(arch: str, stage: str = "score", member: float = 1.0, latency: float = 0.5) -> dict:
    return {"arch": arch, "stage": stage, "score": "0.0", "proxy.synflow": str(member), "latency_ms.cpu": str(latency)}


def test_leaderboards_match_per_arch_within_the_tolerance_whatever_their_order():
    one = [_row("a", member=2.0), _row("b", member=1.0)]
    assert same_leaderboard(one, [_row("b", member=1.0), _row("a", member=2.0 * (1 + 1e-5))], rel=1e-3)  # a near-tie swap
    assert not same_leaderboard(one, [_row("b", member=1.0), _row("a", member=2.0 * (1 + 1e-5))], rel=1e-6)
    assert not same_leaderboard(one, [_row("a", member=2.0), _row("c", member=1.0)], rel=1e-3)  # another candidate
    assert not same_leaderboard(one, [_row("a", member=2.0), _row("b", stage="measure")], rel=1e-3)  # another stage
    assert not same_leaderboard(one, [_row("a", member=2.0), _row("b", latency=0.6)], rel=1e-3)  # another latency
    assert not same_leaderboard(one, [_row("a", member=2.0), _row("a", member=2.0)], rel=1e-3)  # a duplicate
    assert not same_leaderboard(one, one[:1], rel=1e-3)
