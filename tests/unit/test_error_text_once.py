"""Errors are put in words by one function, ``steps/failures.error_text``:
the type once, then its words. About fifteen places wrote
``f"{type(exc).__name__}: {exc}"`` by hand, and an error whose words begin
with its type (aiokafka's KafkaError does so) read "KafkaError: KafkaError:
..." in a planner candidate's reason, a dead letter, a snapshot's refusal."""

from __future__ import annotations

from calstream.daemon.deciders.bulkhead import decide_each
from calstream.steps.failures import error_text


class KafkaLikeError(Exception):
    def __str__(self) -> str:
        return f"KafkaLikeError: {self.args[0]}"


class Candidate:
    science = "jw01234001001_02101_00001_nrcb1"

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def failed(self, reason: str) -> bool:
        self.reasons.append(reason)
        return True

    def decided(self) -> None:
        pass


def _raise(_):
    raise KafkaLikeError("no leader for partition 3")


def test_a_candidate_s_reason_names_the_type_once():
    cand = Candidate()
    assert decide_each([cand], _raise) == []
    assert cand.reasons == ["cannot be decided: KafkaLikeError: no leader for partition 3"]


def test_the_words_can_be_cut_the_type_never():
    assert error_text(ValueError("x" * 500), 200) == "ValueError: " + "x" * 200
    assert error_text(KafkaLikeError("y" * 10), 4) == "KafkaLikeError: yyyy"

