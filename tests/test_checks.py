"""The shared argument check: ints only (bools refused), a minimum, optional None, one message."""
import pytest

from polar._checks import check_int


@pytest.mark.parametrize("value, kwargs", [(1, {}), (0, {"minimum": 0}), (None, {"optional": True}), (7, {"minimum": 7})])
def test_accepts(value, kwargs):
    check_int(value, "n", **kwargs)


@pytest.mark.parametrize("value, kwargs, message", [
    (0, {}, "n must be a positive int, got 0"),
    (True, {}, "n must be a positive int, got True"),
    (2.0, {}, "n must be a positive int, got 2.0"),
    (None, {}, "n must be a positive int, got None"),
    (-1, {"minimum": 0}, "n must be an int >= 0, got -1"),
    ("3", {"optional": True, "hint": "None: all"}, r"n must be a positive int or None \(None: all\), got '3'"),
])
def test_refuses_with_one_line(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_int(value, "n", **kwargs)
