"""The exit-code policy of a study run (app/exit_codes.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from app.exit_codes import ExitCodePolicyError, apply_policy, check_policy
from operators.errors import SeriesSelectionError
from operators.sr_writer import build_not_analysable_sr, save_sr
from tests.node_helpers import make_instance


def test_sr_written_policy_exits_0_only_when_this_run_wrote_an_sr(tmp_path: Path) -> None:
    started = time.time()
    out = tmp_path / "out"
    out.mkdir()
    (out / "not-an-sr.txt").write_text("x")
    make_instance(generate_uid(), generate_uid()).save_as(out / "mr.dcm", enforce_file_format=True)
    assert apply_policy(2, "sr-written", out, started) == 1  # no SR: mercure must see a failure
    sr = build_not_analysable_sr(SeriesSelectionError("No FLAIR series among 1 series"),
                                 [make_instance(generate_uid(), generate_uid())])
    save_sr(sr, out)
    assert apply_policy(2, "sr-written", out, started) == 0  # the not-analysable SR gets dispatched
    assert apply_policy(1, "sr-written", out, started + 3600) == 1  # an SR from an earlier run does not count
    assert apply_policy(2, "detailed", out, started) == 2


def test_unknown_policy_is_named() -> None:
    with pytest.raises(ExitCodePolicyError, match="'strict' is not one of detailed, sr-written"):
        check_policy("strict")
