"""Tests for pipelines.training.metrics: conlleval chunking, SlotF1, SentenceExactMatch, WER/CER."""

from __future__ import annotations

import json
import random
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipelines.training.metrics import (
    ErrorRates,
    SentenceExactMatch,
    SlotF1,
    SlotScore,
    bio_chunks,
    slot_report,
    wer_cer,
)

# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def _scores(preds: list[list[str]], golds: list[list[str]]) -> dict[str, float]:
    metric = SlotF1()
    metric.update(preds, golds)
    return {k: v.item() for k, v in metric.compute().items()}


def _assert_prf(preds, golds, precision: float, recall: float, f1: float) -> None:
    got = _scores(preds, golds)
    assert got == pytest.approx({"precision": precision, "recall": recall, "f1": f1}, abs=1e-6)


# A literal port of conlleval.pl (version 2004-01-26): its endOfChunk / startOfChunk subs and the
# streaming counting loop of its main program, with an empty line (boundary "O O") after every sentence.
# It is the oracle for the randomised check: for B/I/O (and I/E/O) tags, bio_chunks' set comparison must
# give exactly conlleval's found/guessed/correct counts.


def _perl_split(label: str) -> tuple[str, str]:
    if "-" in label:
        prefix, type_ = label.split("-", 1)
        return prefix, type_
    return label, ""


def _perl_end(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    end = (prev_tag, tag) in {
        ("B", "B"),
        ("B", "O"),
        ("I", "B"),
        ("I", "O"),
        ("E", "E"),
        ("E", "I"),
        ("E", "O"),
    }
    if prev_tag != "O" and prev_tag != "." and prev_type != type_:
        end = True
    if prev_tag in ("]", "["):
        end = True
    return end


def _perl_start(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    start = (prev_tag, tag) in {
        ("B", "B"),
        ("I", "B"),
        ("O", "B"),
        ("O", "I"),
        ("E", "E"),
        ("E", "I"),
        ("O", "E"),
    }
    if tag != "O" and tag != "." and prev_type != type_:
        start = True
    if tag in ("[", "]"):
        start = True
    return start


def _conlleval_counts(sentences: list[tuple[list[str], list[str]]]) -> tuple[int, int, int]:
    """Return conlleval's (correct, guessed, gold) chunk counts for (gold, pred) sentence pairs."""
    lines: list[tuple[str, str] | None] = []
    for gold, pred in sentences:
        lines += list(zip(gold, pred, strict=True))
        lines.append(None)  # sentence boundary
    correct_chunk = found_guessed = found_correct = 0
    in_correct = False
    last_c, last_ct, last_g, last_gt = "O", "", "O", ""
    for line in lines:
        gold_label, pred_label = ("O", "O") if line is None else line
        c, ct = _perl_split(gold_label)
        g, gt = _perl_split(pred_label)
        if in_correct:
            end_c = _perl_end(last_c, c, last_ct, ct)
            end_g = _perl_end(last_g, g, last_gt, gt)
            if end_c and end_g and last_gt == last_ct:
                in_correct = False
                correct_chunk += 1
            elif end_c != end_g or gt != ct:
                in_correct = False
        start_c = _perl_start(last_c, c, last_ct, ct)
        start_g = _perl_start(last_g, g, last_gt, gt)
        if start_c and start_g and gt == ct:
            in_correct = True
        found_correct += start_c
        found_guessed += start_g
        last_c, last_ct, last_g, last_gt = c, ct, g, gt
    if in_correct:
        correct_chunk += 1
    return correct_chunk, found_guessed, found_correct


# ---------------------------------------------------------------------------------------------------------
# bio_chunks
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], set()),
        (["O", "O"], set()),
        (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
        # I-X after O starts a chunk (IOB1 style), also at the sentence start.
        (["O", "I-X", "I-X", "O"], {("X", 1, 3)}),
        (["I-X"], {("X", 0, 1)}),
        # B-X always starts a chunk, even right after another X chunk.
        (["B-X", "B-X"], {("X", 0, 1), ("X", 1, 2)}),
        (["B-X", "I-X", "B-X", "I-X"], {("X", 0, 2), ("X", 2, 4)}),
        # A type change ends the previous chunk; I-Y after an X chunk starts a Y chunk.
        (["B-X", "I-Y"], {("X", 0, 1), ("Y", 1, 2)}),
        (["B-X", "I-X", "I-Y", "I-Y"], {("X", 0, 2), ("Y", 2, 4)}),
        # Chunks running to the end of the sentence.
        (["O", "B-X", "I-X"], {("X", 1, 3)}),
        (["O", "O", "B-X"], {("X", 2, 3)}),
        # Types: everything after the first hyphen, dots and underscores kept (ATIS style).
        (["B-fromloc.city_name", "I-fromloc.city_name"], {("fromloc.city_name", 0, 2)}),
        (["B-a-b", "I-a-b", "I-a-c"], {("a-b", 0, 2), ("a-c", 2, 3)}),
        # IOBES.
        (["S-X", "S-X"], {("X", 0, 1), ("X", 1, 2)}),
        (["B-X", "I-X", "E-X", "O"], {("X", 0, 3)}),
        (["B-X", "E-X", "B-X", "E-X"], {("X", 0, 2), ("X", 2, 4)}),
        (["B-X", "E-X", "I-X"], {("X", 0, 2), ("X", 2, 3)}),
        (["B-X", "S-X", "I-X"], {("X", 0, 1), ("X", 1, 2), ("X", 2, 3)}),
        (["O", "E-X"], {("X", 1, 2)}),
        # IOE: E-X E-X are two chunks.
        (["I-X", "E-X", "E-X"], {("X", 0, 2), ("X", 2, 3)}),
        # "." is an outside tag like "O".
        (["B-X", ".", "I-X"], {("X", 0, 1), ("X", 2, 3)}),
        # Untyped B/I/O tags: chunks of type "" with the usual rules (I after O starts one).
        (["B", "I", "O", "I", "B"], {("", 0, 2), ("", 3, 4), ("", 4, 5)}),
        # Bare labels, as conlleval.pl reads them without -r: prefix "PER", type "" (same type as "O"),
        # so they start nothing after O ...
        (["PER", "PER"], set()),
        (["O", "PER", "O"], set()),
        # ... but after a typed chunk the type changes: LOC ends and a ""-typed chunk starts, which "O"
        # (also type "") does not end, so it runs to the end of the sentence.
        (["B-LOC", "PER", "O"], {("LOC", 0, 1), ("", 1, 3)}),
    ],
)
def test_bio_chunks(tags: list[str], expected: set[tuple[str, int, int]]) -> None:
    assert bio_chunks(tags) == expected
    assert bio_chunks(tuple(tags)) == expected


def test_bio_chunks_rejects_a_string() -> None:
    with pytest.raises(TypeError):
        bio_chunks("B-X")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "alphabet",
    [
        # IOB1/IOB2, with a hyphenated type.
        ["O", "B-A", "I-A", "B-B", "I-B", "B-C-D", "I-C-D"],
        # IOE1/IOE2.
        ["O", "I-A", "E-A", "I-B", "E-B"],
        # Untyped IOB.
        ["O", "B", "I"],
    ],
)
def test_bio_chunks_agrees_with_a_port_of_conlleval_pl(alphabet: list[str]) -> None:
    rng = random.Random(1234)
    sentences = []
    for _ in range(3000):
        gold = [rng.choice(alphabet) for _ in range(rng.randint(0, 9))]
        pred = [rng.choice(alphabet) if rng.random() < 0.3 else tag for tag in gold]
        sentences.append((gold, pred))
    total = [0, 0, 0]
    for gold, pred in sentences:
        pred_chunks, gold_chunks = bio_chunks(pred), bio_chunks(gold)
        ours = (len(pred_chunks & gold_chunks), len(pred_chunks), len(gold_chunks))
        assert ours == _conlleval_counts([(gold, pred)]), (gold, pred)
        total = [a + b for a, b in zip(total, ours, strict=True)]
    # The whole corpus in one conlleval run (chunk state carried across sentence boundaries).
    assert tuple(total) == _conlleval_counts(sentences)
    assert total[0] > 500  # the sample exercises correct chunks, not only misses


# ---------------------------------------------------------------------------------------------------------
# SlotF1
# ---------------------------------------------------------------------------------------------------------


def test_slot_f1_perfect_match() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-toloc.city_name"]]
    # correct 3, predicted 3, gold 3
    _assert_prf(gold, gold, 1.0, 1.0, 1.0)


def test_slot_f1_classic_boundary_example() -> None:
    # gold {PER[0:2], LOC[3:4]}, pred {PER[0:1], LOC[3:4]}: correct 1 (LOC), predicted 2, gold 2
    # -> P = 1/2, R = 1/2, F1 = 1/2
    _assert_prf([["B-PER", "O", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-LOC"]], 0.5, 0.5, 0.5)


def test_slot_f1_boundary_error_only() -> None:
    # gold {X[0:2]}, pred {X[0:1]}: correct 0, predicted 1, gold 1
    _assert_prf([["B-X", "O", "O"]], [["B-X", "I-X", "O"]], 0.0, 0.0, 0.0)


def test_slot_f1_type_errors() -> None:
    # gold {PER[0:2]}, pred {LOC[0:2]}: right span, wrong type -> correct 0, predicted 1, gold 1
    _assert_prf([["B-LOC", "I-LOC", "O"]], [["B-PER", "I-PER", "O"]], 0.0, 0.0, 0.0)
    # gold {PER[0:2], LOC[3:4]}, pred {PER[0:2], ORG[3:4], LOC[4:5]}: correct 1, predicted 3, gold 2
    # -> P = 1/3, R = 1/2, F1 = 2*1/(3+2) = 0.4
    _assert_prf(
        [["B-PER", "I-PER", "O", "B-ORG", "B-LOC"]],
        [["B-PER", "I-PER", "O", "B-LOC", "O"]],
        1 / 3,
        0.5,
        0.4,
    )
    # A type change inside a predicted span splits it: pred {PER[0:1], LOC[1:2]}, gold {PER[0:2]}
    # -> correct 0, predicted 2, gold 1
    _assert_prf([["B-PER", "I-LOC"]], [["B-PER", "I-PER"]], 0.0, 0.0, 0.0)


def test_slot_f1_i_after_o_starts_a_chunk() -> None:
    # The seqeval/conlleval example: I-B after O is a chunk start, so pred {A[0:2], B[3:4]} equals gold.
    # correct 2, predicted 2, gold 2
    _assert_prf([["B-A", "I-A", "O", "I-B"]], [["B-A", "I-A", "O", "B-B"]], 1.0, 1.0, 1.0)
    # I-X after O in both gold and prediction, at the sentence start and after O:
    # gold {X[0:1], Y[2:3]}, pred {X[0:1], Y[2:3]} -> correct 2, predicted 2, gold 2
    _assert_prf([["B-X", "O", "I-Y"]], [["I-X", "O", "I-Y"]], 1.0, 1.0, 1.0)
    # gold {X[1:3]}, pred {X[1:2]} -> correct 0, predicted 1, gold 1
    _assert_prf([["O", "I-X", "O", "O"]], [["O", "I-X", "I-X", "O"]], 0.0, 0.0, 0.0)


def test_slot_f1_b_b_is_two_chunks() -> None:
    # gold {X[0:1], X[1:2]}, pred {X[0:2]}: correct 0, predicted 1, gold 2
    _assert_prf([["B-X", "I-X"]], [["B-X", "B-X"]], 0.0, 0.0, 0.0)
    # gold {X[0:1], X[1:2]}, pred {X[0:1], X[1:2], X[2:3]}: correct 2, predicted 3, gold 2
    # -> P = 2/3, R = 1, F1 = 2*2/(3+2) = 0.8
    _assert_prf([["B-X", "B-X", "B-X"]], [["B-X", "B-X", "O"]], 2 / 3, 1.0, 0.8)


def test_slot_f1_chunks_at_sentence_end() -> None:
    # gold {X[1:3]}, pred {X[1:3]}: correct 1, predicted 1, gold 1
    _assert_prf([["O", "B-X", "I-X"]], [["O", "B-X", "I-X"]], 1.0, 1.0, 1.0)
    # gold {X[1:3]}, pred {X[1:2], X[2:3]}: correct 0, predicted 2, gold 1
    _assert_prf([["O", "B-X", "B-X"]], [["O", "B-X", "I-X"]], 0.0, 0.0, 0.0)


def test_slot_f1_no_gold_chunks() -> None:
    # correct 0, predicted 0, gold 0: everything 0, no division error, no NaN
    _assert_prf([["O", "O"]], [["O", "O"]], 0.0, 0.0, 0.0)
    # correct 0, predicted 1, gold 0
    _assert_prf([["B-X", "O"]], [["O", "O"]], 0.0, 0.0, 0.0)
    # correct 0, predicted 0, gold 1
    _assert_prf([["O", "O"]], [["B-X", "O"]], 0.0, 0.0, 0.0)
    # Empty batch and empty sentences.
    _assert_prf([], [], 0.0, 0.0, 0.0)
    _assert_prf([[]], [[]], 0.0, 0.0, 0.0)


def test_slot_f1_accumulates_over_batches_and_resets() -> None:
    metric = SlotF1()
    # batch 1: correct 1, predicted 2, gold 2; batch 2: correct 1, predicted 1, gold 1
    metric.update([["B-PER", "O", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-LOC"]])
    metric.update([["B-X"]], [["B-X"]])
    # correct 2, predicted 3, gold 3 -> 2/3 each
    assert {k: v.item() for k, v in metric.compute().items()} == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3}
    )
    assert (metric.correct.item(), metric.predicted.item(), metric.gold.item()) == (2, 3, 3)
    metric.reset()
    assert (metric.correct.item(), metric.predicted.item(), metric.gold.item()) == (0, 0, 0)


def test_slot_f1_compute_returns_float_scalars() -> None:
    metric = SlotF1()
    metric.update([["B-X"]], [["B-X"]])
    out = metric.compute()
    assert set(out) == {"precision", "recall", "f1"}
    for value in out.values():
        assert value.dtype == torch.float32 and value.ndim == 0


def test_slot_f1_length_mismatch_names_the_sentence() -> None:
    metric = SlotF1()
    with pytest.raises(ValueError, match="sentence 1"):
        metric.update([["O"], ["O", "B-X"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 predicted sentences but 1 gold"):
        metric.update([["O"], ["O"]], [["O"]])
    with pytest.raises(TypeError, match="sentence 0"):
        metric.update(["B-X", "O"], ["B-X", "O"])  # one sentence instead of a batch


# Two halves with different scores, so averaging per-half scores cannot pass for the corpus score.
# half 0: gold {X[0:1]}, pred {X[0:1]} -> correct 1, predicted 1, gold 1 (F1 = 1)
# half 1: gold {X[0:2], Y[3:4], Z[5:6]}, pred {X[0:1], Y[3:4]} -> correct 1, predicted 2, gold 3 (F1 = 0.4)
# all:    correct 2, predicted 3, gold 4 -> P = 2/3, R = 1/2, F1 = 2*2/(3+4) = 4/7
# (mean of the halves' F1 = 0.7, of their precisions = 0.75: both differ from the corpus values)
HALVES: list[tuple[list[list[str]], list[list[str]]]] = [
    ([["B-X"]], [["B-X"]]),
    (
        [["B-X", "O", "O", "B-Y", "O", "O"]],
        [["B-X", "I-X", "O", "B-Y", "O", "B-Z"]],
    ),
]
GLOBAL = {"precision": 2 / 3, "recall": 1 / 2, "f1": 4 / 7}
# Intents and exact match for the same halves: half 0 matches (1/1), half 1 does not (0/1) -> 1/2 overall.
INTENTS = [(["flight"], ["flight"]), (["fare"], ["fare"])]


def test_halves_have_different_scores() -> None:
    f1s = [_scores(*half)["f1"] for half in HALVES]
    assert f1s == pytest.approx([1.0, 0.4])
    assert sum(f1s) / 2 != pytest.approx(GLOBAL["f1"])
    _assert_prf(HALVES[0][0] + HALVES[1][0], HALVES[0][1] + HALVES[1][1], *GLOBAL.values())


def test_slot_f1_merge_state_equals_single_instance() -> None:
    parts = [SlotF1(), SlotF1()]
    for metric, (preds, golds) in zip(parts, HALVES, strict=True):
        metric.update(preds, golds)
    parts[0].merge_state(parts[1])
    merged = {k: v.item() for k, v in parts[0].compute().items()}
    assert merged == pytest.approx(GLOBAL)

    # Merging a plain state dict (what a sum all-reduce produces) gives the same.
    other = SlotF1()
    other.update(*HALVES[0])
    other.merge_state({"correct": torch.tensor(1), "predicted": torch.tensor(2), "gold": torch.tensor(3)})
    assert {k: v.item() for k, v in other.compute().items()} == pytest.approx(GLOBAL)


# ---------------------------------------------------------------------------------------------------------
# real 2-process DDP (gloo)
# ---------------------------------------------------------------------------------------------------------


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        preds, golds = HALVES[rank]
        synced = SlotF1()
        synced.update(preds, golds)
        local = SlotF1(sync_on_compute=False)
        local.update(preds, golds)
        exact = SentenceExactMatch()
        exact.update(preds, golds, *INTENTS[rank])
        result = {
            "synced": {k: v.item() for k, v in synced.compute().items()},
            "local": {k: v.item() for k, v in local.compute().items()},
            # compute() syncs into a cache and restores the local states afterwards
            "states_after": [synced.correct.item(), synced.predicted.item(), synced.gold.item()],
            "exact": exact.compute().item(),
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_two_processes_sync_to_the_global_value(tmp_path: Path) -> None:
    world_size = 2
    mp.spawn(
        _ddp_worker,
        args=(world_size, str(tmp_path / "dist_init"), str(tmp_path)),
        nprocs=world_size,
        join=True,
    )
    local_f1 = [1.0, 0.4]
    local_states = [[1, 1, 1], [1, 2, 3]]
    for rank in range(world_size):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["synced"] == pytest.approx(GLOBAL)
        assert result["local"]["f1"] == pytest.approx(local_f1[rank])
        assert result["states_after"] == local_states[rank]
        assert result["exact"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------------
# slot_report
# ---------------------------------------------------------------------------------------------------------


def test_slot_report_per_type() -> None:
    preds = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "I-ORG", "B-PER"]]
    golds = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "I-LOC", "B-PER"]]
    # LOC: gold {s0 LOC[3:4], s1 LOC[0:2]}, pred {s0 LOC[3:4]}          -> correct 1, pred 1, gold 2
    # ORG: gold {},                       pred {s1 ORG[0:2]}            -> correct 0, pred 1, gold 0
    # PER: gold {s0 PER[0:2], s1 PER[2:3]}, pred {s0 PER[0:1], s1 PER[2:3]} -> correct 1, pred 2, gold 2
    report = slot_report(preds, golds)
    assert list(report) == ["LOC", "ORG", "PER"]
    assert report["LOC"] == pytest.approx((1.0, 0.5, 2 / 3, 2))
    assert report["ORG"] == pytest.approx((0.0, 0.0, 0.0, 0))
    assert report["PER"] == pytest.approx((0.5, 0.5, 0.5, 2))
    assert isinstance(report["PER"], SlotScore) and report["PER"].support == 2
    # The per-type counts add up to the overall metric: correct 2, predicted 4, gold 4.
    _assert_prf(preds, golds, 0.5, 0.5, 0.5)


def test_slot_report_empty_and_mismatch() -> None:
    assert slot_report([["O"]], [["O"]]) == {}
    with pytest.raises(ValueError, match="sentence 0"):
        slot_report([["O", "O"]], [["O"]])


# ---------------------------------------------------------------------------------------------------------
# SentenceExactMatch
# ---------------------------------------------------------------------------------------------------------


def test_sentence_exact_match_cases() -> None:
    metric = SentenceExactMatch()
    metric.update(
        [["B-X", "O"], ["B-X", "O"], ["B-X", "I-X"], [], ("O", "B-Y")],
        [["B-X", "O"], ["B-X", "O"], ["B-X", "O"], [], ["O", "B-Y"]],
        ["a", "b", "a", "c", "d"],
        ["a", "a", "a", "c", "d"],
    )
    # 0: tags and intent right -> match; 1: intent wrong -> no; 2: one tag wrong -> no;
    # 3: empty sentence, intent right -> match; 4: tuple vs list of the same tags -> match
    assert metric.compute().item() == pytest.approx(3 / 5)
    assert (metric.correct.item(), metric.total.item()) == (3, 5)


def test_sentence_exact_match_tensor_intents_and_accumulation() -> None:
    metric = SentenceExactMatch()
    metric.update([["O"], ["B-X"]], [["O"], ["B-X"]], torch.tensor([1, 2]), torch.tensor([1, 3]))
    metric.update([["O"]], [["O"]], [4], [4])
    # matches 1 + 1 of 3
    assert metric.compute().item() == pytest.approx(2 / 3)


def test_sentence_exact_match_empty_and_errors() -> None:
    metric = SentenceExactMatch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns that compute ran before update
        assert metric.compute().item() == 0.0
    with pytest.raises(ValueError, match="sentence 1"):
        metric.update([["O"], ["O"]], [["O"], ["O", "O"]], ["a", "a"], ["a", "a"])
    with pytest.raises(ValueError, match="intents"):
        metric.update([["O"], ["O"]], [["O"], ["O"]], ["a"], ["a", "a"])


def test_sentence_exact_match_merge_state() -> None:
    parts = [SentenceExactMatch(), SentenceExactMatch()]
    for metric, (preds, golds), intents in zip(parts, HALVES, INTENTS, strict=True):
        metric.update(preds, golds, *intents)
    parts[0].merge_state(parts[1])
    assert parts[0].compute().item() == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------------
# WER / CER
# ---------------------------------------------------------------------------------------------------------


def test_wer_cer_hand_example() -> None:
    # 1 substituted word of 3; 1 substituted character ("a" -> "i") of 11 ("the cat sat", spaces count)
    assert wer_cer(["the cat sit"], ["the cat sat"]) == pytest.approx({"wer": 1 / 3, "cer": 1 / 11})


def test_wer_cer_is_corpus_level() -> None:
    # words: 1 substitution + 1 insertion ("ran") over 3 + 2 reference words -> 2/5
    # chars: 1 substitution + 4 insertions (" ran") over 11 + 5 reference characters -> 5/16
    got = wer_cer(["the cat sit", "a dog ran"], ["the cat sat", "a dog"])
    assert got == pytest.approx({"wer": 2 / 5, "cer": 5 / 16})


def test_wer_cer_errors() -> None:
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        wer_cer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no words"):
        wer_cer([""], [""])
    with pytest.raises(TypeError):
        wer_cer("a b", "a b")  # type: ignore[arg-type]


def test_error_rates_collection_keeps_wer_and_cer_apart() -> None:
    metric = ErrorRates(prefix="val/")
    # A first batch where WER and CER states coincide (0 errors of 1 word / 1 char): with torchmetrics'
    # default compute groups the two metrics would be merged here and CER would then report the WER.
    metric.update(["a"], ["a"])
    # words: 1 error of 2; chars: 1 error of 5 ("ab cd")
    metric.update(["xb cd"], ["ab cd"])
    got = {k: v.item() for k, v in metric.compute().items()}
    # totals: WER 1/(1+2) = 1/3, CER 1/(1+5) = 1/6
    assert got == pytest.approx({"val/wer": 1 / 3, "val/cer": 1 / 6})
    assert got["val/wer"] == pytest.approx(wer_cer(["a", "xb cd"], ["a", "ab cd"])["wer"])
