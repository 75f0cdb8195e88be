"""bench_vae_gpu: a variant cut by the timeout still reports the steps it finished."""
from benchmarks.bench_vae_gpu import partial_result


def test_partial_result_leaves_out_the_first_step_and_keeps_the_last_peak():
    # step lines are printed as each step starts: 4 lines = 3 steps finished, at 0, 50, 90, 130 s
    out = "noise\nSTEP 0 0.000 1.00\nSTEP 1 50.000 60.50\nSTEP 2 90.000 61.00\nSTEP 3 130.000 61.25\n"
    got = partial_result(out)
    assert got["partial_steps"] == 3
    assert got["sec_partial"] == (130.0 - 50.0) / 2  # steps 2 and 3; step 1 (autotuning) left out
    assert got["peak_gib_partial"] == 61.25 and got["first_step_s"] == 50.0


def test_partial_result_with_one_step_uses_it_and_with_none_is_empty():
    assert partial_result("STEP 0 0.0 1.0\nSTEP 1 42.0 70.0\n")["sec_partial"] == 42.0
    assert partial_result("STEP 0 0.0 1.0\n") == {}
    assert partial_result("") == {}
