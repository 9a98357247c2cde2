"""bench.analysis.checks: the checks that read stored records (AutoAttack's flags)."""

import numpy as np
import pytest

from bench.analysis.checks import SQUARE_TOLERANCE, cascade_gradient_free, with_record_checks
from bench.core import record


def stage(acc, robust_before=10, n=100, gradient_free=True, cascade=("aa-apgd-ce", "aa-apgd-t", "aa-fab-t")):
    ran_on = np.zeros(n, bool)
    ran_on[:robust_before] = True
    return {
        "attack": "aa-square",
        "n": n,
        "iterative": True,
        "gradient_free": gradient_free,
        "cascade": list(cascade) if cascade else None,
        "ran_on": record.encode(ran_on),
        "defended_adv_acc": acc,
        "checks": [],
    }


def test_a_gradient_free_stage_that_breaks_what_the_gradient_stages_left_is_flagged():
    (found,) = cascade_gradient_free(stage(0.05))
    assert found.code == "square-improves" and "0.100 → 0.050" in found.message


@pytest.mark.parametrize(
    "rec",
    [
        stage(0.1),  # broke nothing
        stage(0.1 - SQUARE_TOLERANCE / 2),  # within AutoAttack's tolerance
        stage(0.05, gradient_free=False),  # a gradient stage
        stage(0.05, cascade=None),  # Square on every image: versus_gradient_free's job
    ],
)
def test_no_flag_where_autoattack_raises_none(rec):
    assert cascade_gradient_free(rec) == []


def test_the_report_recomputes_it_for_stored_records_by_code():
    old = {**stage(0.1), "checks": ["aa-square, the cascade's gradient-free stage, lowers … (stale)"]}
    (checks,) = with_record_checks([old])
    assert checks == []  # recognised by its code and recomputed: nothing to flag now
    (checks,) = with_record_checks([stage(0.02)])
    assert [c.code for c in checks] == ["square-improves"]


def test_check_codes_are_an_enum_stored_as_their_text():
    """Code decides on members (mypy refuses a bare string: a typo cannot make a new code); records
    store the text, and a stored code reads back as its member."""
    import json

    import pytest

    from bench.core.checkcodes import CODES, Check, Code, split

    c = Check(Code.LEAVES_RANGE, "adversarial images leave [0,1]")
    stored = json.loads(json.dumps(split([c])))
    assert stored == {"checks": ["adversarial images leave [0,1]"], "check_codes": ["leaves-range"]}
    back = Check(stored["check_codes"][0], stored["checks"][0])
    assert back == c and back.code is Code.LEAVES_RANGE and set(CODES) == set(Code)
    with pytest.raises(ValueError, match="unknown check code 'leaves-rnage'"):
        Check("leaves-rnage", "typo")
