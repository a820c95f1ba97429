"""The exactness arithmetic (docs/design.md §2): is_exact / output_size against hand-worked cases,
chains of layers, the shifted-window condition, and the deprecated tracer aliases."""

import pytest

from equivlib.exactness import (
    is_exact,
    is_exact_stack,
    output_size,
    shifted_windows_symmetric,
    stage_sizes,
)


@pytest.mark.parametrize(
    "n, k, s, p, d, expected",
    [
        # 3x3 stride 2 pad 1: centres 0,2,..; symmetric iff n odd
        (33, 3, 2, 1, 1, True),
        (32, 3, 2, 1, 1, False),
        (9, 3, 2, 1, 1, True),
        (8, 3, 2, 1, 1, False),
        # 1x1 stride 2 shortcut: same parity rule
        (17, 1, 2, 0, 1, True),
        (16, 1, 2, 0, 1, False),
        # 2x2 max-pool stride 2: needs an even input
        (28, 2, 2, 0, 1, True),
        (27, 2, 2, 0, 1, False),
        (29, 2, 2, 0, 1, False),
        # stride 1 is always exact, whatever kernel and padding
        (32, 4, 1, 0, 1, True),
        (31, 2, 1, 0, 1, True),
        (7, 5, 1, 2, 1, True),
        # stride 3: (n + 2p - k) % 3 == 0
        (10, 1, 3, 0, 1, True),   # centres 0,3,6,9 of 0..9
        (11, 1, 3, 0, 1, False),  # centres 0,3,6,9 of 0..10: not symmetric about 5
        (11, 3, 3, 1, 1, False),  # 11 + 2 - 3 = 10, 10 % 3 = 1
        (13, 3, 3, 1, 1, True),   # 13 + 2 - 3 = 12
        # dilation 2 makes a 3x3 kernel span 5 pixels
        (9, 3, 2, 0, 2, True),    # 9 - 5 = 4, even
        (10, 3, 2, 0, 2, False),
        (10, 3, 2, 1, 2, False),  # 10 + 2 - 5 = 7
        (11, 3, 2, 1, 2, True),   # 11 + 2 - 5 = 8
    ],
)
def test_is_exact_hand_worked(n, k, s, p, d, expected):
    assert is_exact(n, k, s, p, dilation=d) is expected


@pytest.mark.parametrize("n", range(5, 40))
@pytest.mark.parametrize("k, s, p", [(3, 2, 1), (1, 2, 0), (2, 2, 0), (3, 3, 0), (5, 2, 2)])
def test_is_exact_matches_symmetry_of_sample_centres(n, k, s, p):
    """The closed form agrees with the definition: centres symmetric about (n-1)/2."""
    centres = {s * i - p + (k - 1) / 2 for i in range(output_size(n, k, s, p))}
    mirrored = {n - 1 - c for c in centres}
    assert is_exact(n, k, s, p) is (centres == mirrored)


def test_output_size_matches_pytorch_formula():
    assert output_size(32, 3, 2, 1) == 16
    assert output_size(33, 3, 2, 1) == 17
    assert output_size(28, 2, 2, 0) == 14
    assert output_size(14, 4, 1, 0) == 11


@pytest.mark.parametrize(
    "n, expected",
    [(33, True), (32, False), (225, True), (224, False), (97, True), (96, False), (35, False)],
)
def test_stack_needs_every_stage_exact(n, expected):
    """ResNet-18 style: three stride-2 stages; 35 -> 18 fails at the second stage."""
    stages = [(3, 2, 1)] * 3
    if n in (33, 32):  # ResNet-44 has two stride-2 stages
        stages = stages[:2]
    assert is_exact_stack(n, stages) is expected


def test_stage_sizes():
    assert stage_sizes(33, [(3, 1, 1), (3, 2, 1), (3, 2, 1)]) == [33, 33, 17, 9]
    assert stage_sizes(32, [(3, 1, 1), (3, 2, 1), (3, 2, 1)]) == [32, 32, 16, 8]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0, kernel_size=3, stride=1, padding=0), "input size"),
        (dict(n=8, kernel_size=0, stride=1, padding=0), "kernel_size"),
        (dict(n=8, kernel_size=3, stride=0, padding=0), "stride"),
        (dict(n=8, kernel_size=3, stride=1, padding=-1), "padding"),
        (dict(n=8, kernel_size=3, stride=1, padding="same"), "padding"),
        (dict(n=8, kernel_size=3, stride=1, padding=0, dilation=0), "dilation"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        is_exact(**kwargs)


def test_kernel_larger_than_input_has_no_output():
    with pytest.raises(ValueError, match="smaller than the effective kernel"):
        output_size(2, 5, 1, 0)


@pytest.mark.parametrize("window", range(1, 9))
@pytest.mark.parametrize("windows", [1, 2, 3, 4])
def test_shifted_window_condition_is_twice_the_shift_divisible_by_the_window(window, windows):
    """Boundaries {(k*w + s) mod n} mirror onto {(-k*w - s) mod n}: the same set iff
    2s ≡ 0 (mod w), i.e. the shift is 0 or w/2."""
    n = window * windows
    for shift in range(-n, 2 * n):
        cuts = {(k * window + shift) % n for k in range(windows)}
        mirrored = {(n - c) % n for c in cuts}
        assert shifted_windows_symmetric(n, window, shift) is (cuts == mirrored)
        assert (cuts == mirrored) is ((2 * shift) % window == 0)


def test_shifted_window_condition_needs_tiling_windows():
    with pytest.raises(ValueError, match="tile"):
        shifted_windows_symmetric(10, 4, 2)


# ----------------------------------------------------------------- the tracer moved out
MOVED_TO_TRACER = ["STOPS", "TraceReport", "TraceRow", "exact_input_sizes",
                   "infer_input_shape", "nearest_exact_size", "trace"]


@pytest.mark.parametrize("name", MOVED_TO_TRACER)
def test_the_tracer_names_still_work_from_exactness_and_warn(name):
    import equivlib.exactness as exactness
    import equivlib.tracer as tracer

    message = (rf"^equivlib\.exactness\.{name} moved to equivlib\.tracer\.{name}; "
               r"the alias goes in equivlib 0\.2$")
    with pytest.warns(DeprecationWarning, match=message):
        assert getattr(exactness, name) is getattr(tracer, name)


def test_a_from_import_of_a_moved_name_warns_where_it_is_written():
    with pytest.warns(DeprecationWarning) as caught:
        from equivlib.exactness import trace
    from equivlib.tracer import trace as moved

    assert trace is moved
    assert [w.filename for w in caught] == [__file__]


def test_exactness_has_no_other_names_and_imports_nothing_from_equivlib():
    """The arithmetic sits below the tracer: at load time it imports no equivlib module but
    the helper of its deprecated aliases (the bottom layer)."""
    import ast
    from pathlib import Path

    import equivlib.exactness as exactness

    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        exactness.no_such_name  # noqa: B018
    tree = ast.parse(Path(exactness.__file__).read_text())
    imported = [n.module for n in tree.body if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.split(".")[0] == "equivlib"
                and m != "equivlib._deprecation"]
