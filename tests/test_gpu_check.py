"""`python -m tools.gpu_check --dry-run`: every part of the one-shot GPU check runs, on the CPU, at a tiny shape."""

from __future__ import annotations

import json
import math

from tools import gpu_check


def test_the_dry_run_runs_every_part_and_writes_one_report(tmp_path):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    parts = report["parts"]
    assert list(parts) == list(gpu_check.PARTS) and report["ok"] and report["dry_run"]
    assert all(p["ok"] and "error" not in p and p["seconds"] >= 0 for p in parts.values())
    # the figures each part exists for
    for name in ("eager", "sdpa"):
        attention = parts["attention"]["implementations"][name]
        assert attention["real_rows_finite"] and attention["padded_vs_alone_max_rel"] < 1e-3
    decode = parts["decode"]
    for sampler in ("static", "previous", "compiled"):  # the compiled step ran (inductor on the CPU)
        assert f"{sampler}_ms_per_step_batch_4" in decode and decode[f"{sampler}_first_call_s_batch_4"] > 0
    assert decode["bandwidth_gb_per_s"] > 0 and decode["floor_ms_batch_4"] > 0
    assert parts["stale_weights"]["second_update_clip_fraction"] > 0
    poster = parts["poster_step"]
    assert len(poster["steps"]) == 2 and poster["every_loss_finite"] and poster["weights_moved_share"] > 0.5
    assert set(poster["steps"][0]["seconds"]) == {"rollout", "reward", "reference", "update"}
    assert poster["config"]["loss_aggregation"] == "sequence" and poster["config"]["scorer"] == "policy"
    assert math.isfinite(parts["reward_precision"]["per_token_abs_diff_max"])
    assert parts["nccl"]["skipped"]


def test_without_a_gpu_only_the_dry_run_is_offered(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "x.json")]) == 2
    assert "--dry-run" in capsys.readouterr().err
