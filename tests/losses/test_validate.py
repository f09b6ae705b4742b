"""validate_labels (softmax_jax/losses/_validate.py): the host-side label check."""

import numpy as np
import pytest

import softmax_jax as sj


def test_valid_labels_come_back_unchanged():
  np.testing.assert_array_equal(sj.validate_labels([0, 1, 2], 3), [0, 1, 2])
  np.testing.assert_array_equal(sj.validate_labels([0, -100, 2], 3, ignore_index=-100),
                                [0, -100, 2])
  assert sj.validate_labels(np.array([255, 1], np.uint8), 256).tolist() == [255, 1]


def test_bad_labels_are_listed_by_position():
  with pytest.raises(ValueError, match=r"2 label\(s\) outside \[0, 3\): labels\[1\] = 3, "
                     r"labels\[3\] = -1"):
    sj.validate_labels([0, 3, 1, -1], 3)
  with pytest.raises(ValueError, match=r"labels\[1, 0\] = 7"):
    sj.validate_labels([[0, 1], [7, 2]], 3)
  with pytest.raises(ValueError, match=r"labels\[0\] = 5, labels\[1\] = 5 and 3 more"):
    sj.validate_labels([5] * 5, 3, max_listed=2)
  with pytest.raises(ValueError, match=r"outside \[0, 3\) or -100: labels\[1\] = -1"):
    sj.validate_labels([0, -1], 3, ignore_index=-100)


def test_wrong_types_are_refused():
  with pytest.raises(TypeError, match="labels must be integers"):
    sj.validate_labels([0.0, 1.0], 3)
  with pytest.raises(TypeError, match="labels must be integers"):
    sj.validate_labels([True, False], 3)
  with pytest.raises(ValueError, match="num_classes must be a positive int"):
    sj.validate_labels([0], 0)
  with pytest.raises(ValueError, match="cannot occur in labels of dtype uint8"):
    sj.validate_labels(np.array([0, 1], np.uint8), 3, ignore_index=-100)
