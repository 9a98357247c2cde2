"""bench.analysis.grading: a recomputed cell graded against its record, without a run."""

import numpy as np

from bench.analysis.grading import grade, machine_differences, machine_of, summary
from bench.core.record import encode
from bench.core.stats import wilson

N = 200
INTEL = {
    "device_type": "cpu",
    "device": "cpu (x86_64, 2 threads)",
    "cpu_model": "Intel(R) Xeon(R) Processor",
    "blas": "mkl (MKL 2024.2); cpu kernels AVX512",
}
AMD = {
    "device_type": "cpu",
    "device": "cpu (x86_64, 2 threads)",
    "cpu_model": "AMD EPYC",
    "cpu_vendor": "AuthenticAMD",
    "cpu_capability": "AVX512",
    "blas": "mkl (MKL 2024.2); cpu kernels AVX512",
    "numerics": "native",
}


def record(bits: np.ndarray, **machine) -> dict:
    k = int(bits.sum())
    lo, hi = wilson(k, N)
    ones = np.ones(N, dtype=bool)
    return {
        "n": N,
        "correct": {
            "clean": encode(ones),
            "adv": encode(ones),
            "defended_clean": encode(ones),
            "defended_adv": encode(bits),
        },
        "defended_adv_acc": k / N,
        "defended_adv_acc_ci_low": lo,
        "defended_adv_acc_ci_high": hi,
        **machine,
    }


def base() -> np.ndarray:
    return np.arange(N) % 3 == 0


def flipped(bits: np.ndarray, lost: int, gained: int) -> np.ndarray:
    out = bits.copy()
    out[np.flatnonzero(bits)[:lost]] = False
    out[np.flatnonzero(~bits)[:gained]] = True
    return out


def test_older_records_machine_is_inferred_from_model_and_blas():
    m = machine_of(INTEL, {"torch": "2.14.1"})
    assert m["cpu vendor"] == "GenuineIntel" and m["instruction set"] == "AVX512" and m["numerics"] == "native"
    assert m["torch"] == "2.14.1"
    assert machine_differences(m, machine_of(AMD)) == ["cpu vendor GenuineIntel → AuthenticAMD"]


def test_identical_equivalent_and_differs():
    old = record(base(), **INTEL)
    here = machine_of(AMD)
    assert grade(old, record(base(), **AMD), here).grade == "identical"
    # a few flips both ways on another CPU: noise
    g = grade(old, record(flipped(base(), 3, 2), **AMD), here)
    assert g.grade == "equivalent" and "5 of 200 samples differ" in g.why and g.machine
    # the same flips on the record's own machine class: a real change
    assert grade(old, record(flipped(base(), 3, 2), **INTEL), machine_of(INTEL)).grade == "differs"
    # one way only, many images, on another CPU: beyond noise
    g = grade(old, record(flipped(base(), 20, 0), **AMD), here)
    assert g.grade == "differs" and "McNemar" in g.why
    assert grade(old, None, here).grade == "differs"


def test_another_device_beyond_noise_is_not_comparable_and_exits_3():
    gpu = dict(INTEL, device_type="cuda", device="NVIDIA H200")
    g = grade(record(base(), **gpu), record(flipped(base(), 30, 0), **AMD), machine_of(AMD))
    assert g.grade == "not comparable" and any(d.startswith("device NVIDIA H200 → cpu") for d in g.machine)
    line, status = summary([g, grade(record(base()), record(base()), machine_of({}))])
    assert status == 3 and "1 not comparable" in line and "device NVIDIA H200 → cpu" in line
    assert summary([g, grade(record(base()), None, machine_of({}))])[1] == 1  # differs wins
    assert summary([])[1] == 0
