"""Unit tests of the harness's conversion of main()'s value to JSON
(harness._to_json_value): what crosses and what is refused, with its reason.

Run with the jail's Python (it has numpy): python3 -m unittest discover -s nsjail
"""

import unittest

import numpy

import harness


def convert(value):
    return harness._to_json_value(value, numpy.generic, 0, set())


class ConversionTest(unittest.TestCase):
    def refused(self, value, reason):
        with self.assertRaises(harness.NotJson) as caught:
            convert(value)
        self.assertIn(reason, str(caught.exception))

    def test_plain_json_crosses_unchanged(self):
        value = {"a": [1, 2.5, None, True, "x"], "b": {"c": []}}
        self.assertEqual(convert(value), value)

    def test_tuples_become_lists(self):
        self.assertEqual(convert((1, (2, 3))), [1, [2, 3]])

    def test_numpy_scalars_become_python_numbers_keys_too(self):
        converted = convert({numpy.int64(3): numpy.float64(1.5), "n": numpy.int32(7)})
        self.assertEqual(converted, {"3": 1.5, "n": 7})
        self.assertIs(type(converted["n"]), int)

    def test_non_string_keys_are_written_as_json_writes_them(self):
        self.assertEqual(convert({1: "a", 2.5: "b", None: "c"}), {"1": "a", "2.5": "b", "null": "c"})
        self.assertEqual(convert({False: "f"}), {"false": "f"})

    def test_nan_and_infinity_are_refused_as_values_and_keys(self):
        self.refused(float("nan"), "NaN or Infinity")
        self.refused([float("-inf")], "NaN or Infinity")
        self.refused({float("nan"): 1}, "NaN or Infinity dictionary key")
        self.refused({numpy.float64("inf"): 1}, "NaN or Infinity dictionary key")

    def test_integers_beyond_64_bits_are_refused(self):
        self.assertEqual(convert(2**64 - 1), 2**64 - 1)
        self.assertEqual(convert(-(2**63)), -(2**63))
        self.refused(2**64, "wider than 64 bits")
        self.refused(-(2**63) - 1, "wider than 64 bits")

    def test_arrays_and_other_objects_are_refused_by_type(self):
        self.refused(numpy.array([1, 2]), "type ndarray")
        self.refused({1, 2}, "type set")
        self.refused({(1, 2): "tuple key"}, "dictionary key of type tuple")

    def test_cycles_are_refused_and_shared_values_are_not_cycles(self):
        shared = [1]
        self.assertEqual(convert([shared, shared]), [[1], [1]])
        loop = []
        loop.append(loop)
        self.refused(loop, "reference cycle")
        table = {}
        table["self"] = table
        self.refused(table, "reference cycle")

    def test_nesting_deeper_than_the_limit_is_refused(self):
        def nested(levels):
            value = 0
            for _ in range(levels):
                value = [value]
            return value

        self.assertEqual(convert(nested(harness.MAX_RESULT_DEPTH)), nested(harness.MAX_RESULT_DEPTH))
        self.refused(nested(harness.MAX_RESULT_DEPTH + 1), "nested more than")


if __name__ == "__main__":
    unittest.main()
