from __future__ import annotations

import random
import uuid

import pytest

from serving.routing import Route, Router

KEYS = [str(uuid.UUID(int=random.Random(7).getrandbits(128) + i)) for i in range(10_000)]


def ab(weights: list[tuple[int, int]], *, alias: str = "production") -> Route[int]:
    return Route.build(
        model="churn", alias=alias, revision=1, variants=[(v, w, v) for v, w in weights]
    )


def share(route: Route[int], version: int, keys: list[str]) -> float:
    return sum(route.pick(k) == version for k in keys) / len(keys)


def test_a_90_10_split_gives_each_variant_its_share_of_10000_keys() -> None:
    route = ab([(1, 90), (2, 10)])
    assert share(route, 2, KEYS) == pytest.approx(0.10, abs=0.015)
    assert share(route, 1, KEYS) == pytest.approx(0.90, abs=0.015)


def test_a_key_lands_on_the_same_variant_every_time_and_on_every_replica() -> None:
    first = ab([(1, 90), (2, 10)])
    rebuilt = ab([(2, 10), (1, 90)])  # another replica, the spec listed in another order
    answers = {k: first.pick(k) for k in KEYS}
    for _ in range(3):
        assert {k: first.pick(k) for k in KEYS} == answers
    assert {k: rebuilt.pick(k) for k in KEYS} == answers


def test_moving_weights_moves_only_the_keys_at_the_boundary() -> None:
    before = ab([(1, 90), (2, 10)])
    after = ab([(1, 80), (2, 20)])
    moved = [k for k in KEYS if before.pick(k) != after.pick(k)]
    assert len(moved) / len(KEYS) == pytest.approx(0.10, abs=0.015)
    # Every key that moved went to the variant that grew; none went the other way.
    assert all(before.pick(k) == 1 and after.pick(k) == 2 for k in moved)


def test_adding_a_variant_only_takes_keys_from_the_slices_it_borders() -> None:
    before = ab([(1, 50), (2, 50)])
    after = ab([(1, 50), (2, 40), (3, 10)])
    assert all(before.pick(k) == after.pick(k) for k in KEYS if after.pick(k) != 3)


def test_two_aliases_split_the_same_keys_independently() -> None:
    production = ab([(1, 50), (2, 50)], alias="production")
    staging = ab([(1, 50), (2, 50)], alias="staging")
    agree = sum(production.pick(k) == staging.pick(k) for k in KEYS) / len(KEYS)
    assert agree == pytest.approx(0.5, abs=0.03)


def test_without_a_key_traffic_is_random_by_weight() -> None:
    route = ab([(1, 90), (2, 10)])
    random.seed(11)
    picks = [route.pick(None) for _ in range(10_000)]
    assert picks.count(2) / len(picks) == pytest.approx(0.10, abs=0.015)


def test_a_zero_weight_variant_gets_no_traffic() -> None:
    route = ab([(1, 100), (2, 0)])
    assert {route.pick(k) for k in KEYS[:2000]} == {1}
    assert route.weights == ((1, 100), (2, 0))


def test_a_spec_without_positive_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="no variant with weight"):
        ab([(1, 0)])


def test_the_router_knows_a_model_by_any_alias_routed_or_pending() -> None:
    router: Router[int] = Router(table={("churn", "staging"): ab([(1, 100)], alias="staging")})
    router.pending = {("spam", "production"): "loading"}
    assert router.knows_model("churn")
    assert router.knows_model("spam")
    assert not router.knows_model("nope")
