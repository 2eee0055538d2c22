"""Wall-clock tests of benchmarks/speed.py's paired timer. Not in the default suite (they need an idle CPU):
    python -m pytest -m timing"""
import time

import pytest
import torch

from benchmarks.speed import paired


def spin(seconds: float) -> None:
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        pass


@pytest.mark.timing
def test_paired_measures_the_ratio_of_two_costs():
    bare, target, ratio = paired(lambda: spin(1e-3), lambda: spin(2e-3), 0.2, torch.device("cpu"), block=4)
    assert 0.4 < ratio < 0.6, ratio  # target costs twice as much
    assert 0.4 < target / bare < 0.6  # the rates agree when nothing stalls


@pytest.mark.timing
def test_paired_ratio_ignores_a_stall_in_one_block():
    calls = [0]

    def stalls_once():
        calls[0] += 1
        spin(0.1 if calls[0] == 3 else 1e-3)  # one 100 ms stall (another tenant), in the first block

    bare, target, ratio = paired(lambda: spin(1e-3), stalls_once, 0.2, torch.device("cpu"), block=4)
    assert 0.9 < ratio < 1.1, ratio  # the median over blocks does not see it
    assert target / bare < 0.8  # the total-time rates do
