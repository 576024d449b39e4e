import pytest
from oplora.metrics.vqa import mean_vqa_accuracy, normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Red", "red"),
        ("  the red one.\n", "red 1"),
        ("Two", "2"),
        ("a dog", "dog"),
        ("dont know", "don't know"),
        ("yes!", "yes"),
        ("3.5", "3.5"),
        ("1,000", "1000"),
        ("black-and-white", "black and white"),
        ("An apple", "apple"),
    ],
)
def test_normalize_answer_follows_vqav2(raw, expected):
    assert normalize_answer(raw) == expected


def test_single_answer_is_exact_match_after_normalisation():
    assert vqa_accuracy("The Circle.", ["circle"]) == 1.0
    assert vqa_accuracy("square", ["circle"]) == 0.0


def test_ten_annotators_match_the_official_formula():
    answers = ["red"] * 3 + ["blue"] * 7
    # Leave-one-out: dropping one of the 3 "red" leaves 2 matches (2/3); dropping a "blue" leaves 3 (1).
    assert vqa_accuracy("red", answers) == pytest.approx((3 * (2 / 3) + 7 * 1.0) / 10)
    assert vqa_accuracy("blue", answers) == 1.0
    assert vqa_accuracy("green", answers) == 0.0
    assert vqa_accuracy("red", ["red"] + ["blue"] * 9) == pytest.approx(9 * (1 / 3) / 10)


def test_mean_and_errors():
    assert mean_vqa_accuracy([("red", ["red"]), ("blue", ["red"])]) == 0.5
    assert mean_vqa_accuracy([]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])
