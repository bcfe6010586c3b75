"""Bad input, the way a user gives it: `train.py` answers `error: …` naming the cause and exits 2, before any
model loads where it can; a run directory holds one run; damaged files are named, and --resume falls back.

Everything goes through `train.main(argv)` with the tests' tiny model saved to a directory.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import train
from grpo.checkpoint import STATE_FILE, checkpoints

QUICK = ["--task", "math", "--max-prompt-tokens", "2000", "--max-new-tokens", "4", "--prompts-per-step", "1",
         "--group-size", "2", "--micro-batch-size", "2", "--lr", "1e-3", "--save-every", "1"]  # fmt: skip


@pytest.fixture
def model_dir(tiny_model_dir):
    return tiny_model_dir


def run(argv, capsys) -> tuple[int, str]:
    code = train.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def train_args(model_dir, out_dir, *extra):
    return ["--model", model_dir, "--out-dir", out_dir, *QUICK, *extra]


@pytest.mark.parametrize(
    "extra, cause",
    [
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--temperature", "0", "--reward", "logprob"], "--temperature 0 makes every completion"),
        (["--data", "poems.csv"], "--data is read by --task poetry"),
        (["--device", "cuda"], "no CUDA GPU"),
        (["--device", "tpu-of-dreams"], "not a torch device"),
        (["--dtype", "float16"], "--dtype float16 cannot train: AdamW's eps"),
    ],
)
def test_bad_settings_are_refused_before_a_model_loads(tmp_path, capsys, extra, cause):
    if extra[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the case is a machine without it
    # the model does not exist: a refusal that names the setting came before any loading
    code, err = run(train_args(tmp_path / "no-model", tmp_path / "run", *extra), capsys)
    assert code == 2 and err.startswith("error: ") and cause in err
    assert not (tmp_path / "run").exists()


def test_an_unknown_dtype_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dtype", "foo", "--out-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "invalid choice: 'foo'" in err
    assert len(err.strip().splitlines()) == 1  # one line, not the usage of every flag before it


@pytest.mark.parametrize("content, cause", [("", "missing CSV column"), ("author,title,text\n", "no example of"),
                                            ('{"author": "a"}\n', "missing field"), ("[1, 2", "not JSON")])  # fmt: skip
def test_poetry_data_is_checked_before_a_model_loads(tmp_path, capsys, content, cause):
    data = tmp_path / ("poems.json" if content.startswith(("{", "[")) else "poems.csv")
    data.write_text(content)
    argv = [
        "--task",
        "poetry",
        "--data",
        data,
        "--model",
        tmp_path / "no-model",
        "--out-dir",
        tmp_path / "run",
    ]
    code, err = run(argv, capsys)
    assert code == 2 and err.startswith("error: --task poetry") and str(data) in err and cause in err


def test_an_out_dir_that_is_a_file_or_under_one_is_refused(tmp_path, model_dir, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = run(train_args(model_dir, blocker), capsys)
    assert code == 2 and "is a file, not a directory" in err
    code, err = run(train_args(model_dir, blocker / "run"), capsys)
    assert code == 2 and "cannot be written" in err


def test_a_damaged_model_file_is_named(tmp_path, model_dir, capsys):
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a copy cut short
    code, err = run(train_args(model_dir, tmp_path / "run", "--steps", "1"), capsys)
    assert code == 2 and "is damaged" in err and str(model_dir) in err and "model.safetensors" in err


def test_overwrite_empties_the_directory_and_resume_continues_the_new_run(tmp_path, model_dir, capsys):
    out = tmp_path / "run"
    assert run(train_args(model_dir, out, "--steps", "2", "--seed", "1"), capsys)[0] == 0
    old_id = json.loads((out / "config.json").read_text())["run_id"]
    assert (out / "final").is_dir() and [s for s, _ in checkpoints(out)] == [1, 2]

    code, err = run(train_args(model_dir, out, "--steps", "1", "--overwrite"), capsys)
    assert code == 0 and "removed the previous run's" in err
    new_id = json.loads((out / "config.json").read_text())["run_id"]
    assert new_id != old_id and [s for s, _ in checkpoints(out)] == [1]

    code, err = run(["--resume", out, "--steps", "2"], capsys)
    assert code == 0 and "step-00000001" in err  # the new run's checkpoint, not the old run's step 2
    assert (
        f"python evaluate.py --compare {out}/eval-start.json {out}/eval-final.json" in err
    )  # what to run next
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, model_dir, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(train_args(model_dir, a, "--steps", "1"), capsys)[0] == 0
    assert run(train_args(model_dir, b, "--steps", "1"), capsys)[0] == 0
    (_, a_checkpoint), (_, b_checkpoint) = checkpoints(a)[-1], checkpoints(b)[-1]
    shutil.rmtree(b_checkpoint)
    shutil.copytree(a_checkpoint, b_checkpoint)  # b's directory now holds a's weights
    code, err = run(["--resume", b, "--steps", "2"], capsys)
    assert code == 2 and "mixes two runs" in err


def test_resume_falls_back_from_a_damaged_checkpoint_and_drops_a_torn_line(tmp_path, model_dir, capsys):
    out = tmp_path / "run"
    assert run(train_args(model_dir, out, "--steps", "2"), capsys)[0] == 0
    newest = checkpoints(out)[-1][1]
    (newest / STATE_FILE).write_bytes((newest / STATE_FILE).read_bytes()[:50])
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "rew')  # a crash mid-write
    code, err = run(["--resume", out, "--steps", "3"], capsys)
    assert code == 0, err
    assert f"{newest / STATE_FILE} is damaged" in err and "trying the checkpoint before it" in err
    assert "step-00000001" in err and "not a whole line" in err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_a_damaged_config_json_on_resume_is_named(tmp_path, model_dir, capsys):
    out = tmp_path / "run"
    assert run(train_args(model_dir, out, "--steps", "1"), capsys)[0] == 0
    (out / "config.json").write_text('{"task": "ma')
    code, err = run(["--resume", out], capsys)
    assert code == 2 and f"{out / 'config.json'} is damaged" in err


def test_non_finite_logits_stop_the_run_with_one_line_and_exit_3(tmp_path, model_dir, capsys):
    from transformers import AutoModelForCausalLM

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    model = AutoModelForCausalLM.from_pretrained(broken)
    with torch.no_grad():
        model.lm_head.weight[5, 0] = float("nan")  # one vocabulary row's logit is NaN in every position
    model.save_pretrained(broken)
    code, err = run(train_args(broken, tmp_path / "run", "--steps", "1"), capsys)
    assert code == train.EXIT_DIVERGED == 3
    assert "error: the policy's logits are NaN or infinite" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", [["--model", "smollm2-135"], ["--task", "jsonl", "--data", "EMPTY"]])
def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(tmp_path, model_dir, capsys, bad):
    out = tmp_path / "run"
    assert run(train_args(model_dir, out, "--steps", "1"), capsys)[0] == 0
    before = sorted(p.name for p in out.iterdir())
    (tmp_path / "empty.jsonl").write_text("")
    bad = [str(tmp_path / "empty.jsonl") if a == "EMPTY" else a for a in bad]
    args = train_args(model_dir, out, "--steps", "1", "--overwrite") + bad  # the last --model / --task wins
    code, err = run(args, capsys)
    assert code == 2 and err.startswith("error: ") and "removed" not in err
    assert sorted(p.name for p in out.iterdir()) == before and (out / "final").is_dir()


def test_a_second_run_in_a_directory_in_use_is_refused(tmp_path, model_dir, capsys):
    import fcntl
    import os

    from grpo.run_dir import LOCK_FILE

    out = tmp_path / "run"
    out.mkdir()
    # another process's run, as the kernel sees it: an exclusive flock on the directory's lock file
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242")
    try:
        for extra in ([], ["--overwrite"]):
            code, err = run(train_args(model_dir, out, "--steps", "1", *extra), capsys)
            assert code == 2 and "is in use by another run (pid 4242)" in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written beside it
    finally:
        os.close(fd)  # the other run ends: the directory is free
    assert run(train_args(model_dir, out, "--steps", "1"), capsys)[0] == 0


def test_resume_with_changed_options_refuses_them_by_name_or_applies_and_records_them(
    tmp_path, model_dir, capsys
):
    out = tmp_path / "run"
    assert run(train_args(model_dir, out, "--steps", "1"), capsys)[0] == 0
    code, err = run(["--resume", out, "--lr", "1e-4", "--group-size", "3", "--steps", "2"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--group-size 3 (the run's: 2)" in err and "--lr 0.0001 (the run's: 0.001)" in err
    saved = json.loads((out / "config.json").read_text())
    assert saved["steps"] == 1 and saved["group_size"] == 2  # the record of the run is untouched
    # the same value as the run's is no change; --steps extends the run and is recorded
    code, err = run(["--resume", out, "--group-size", "2", "--steps", "2"], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["steps"] == 2


def test_resume_with_another_out_dir_names_both(tmp_path, model_dir, capsys):
    out = tmp_path / "run"
    assert run(train_args(model_dir, out, "--steps", "1"), capsys)[0] == 0
    code, err = run(["--resume", out, "--out-dir", tmp_path / "elsewhere", "--steps", "2"], capsys)
    assert (
        code == 2 and f"--resume {out} continues the run in {out}; --out-dir {tmp_path / 'elsewhere'}" in err
    )


def test_a_newest_checkpoint_without_its_trainer_state_is_named_and_skipped(tmp_path, model_dir, capsys):
    out = tmp_path / "run"
    assert run(train_args(model_dir, out, "--steps", "2"), capsys)[0] == 0
    newest = checkpoints(out)[-1][1]
    (newest / STATE_FILE).unlink()
    code, err = run(["--resume", out, "--steps", "3"], capsys)
    assert code == 0, err
    assert f"warning: {newest} is incomplete (no {STATE_FILE}); skipped" in err and "step-00000001" in err


def failing_save(monkeypatch, at: int) -> None:
    """torch.save of a checkpoint's trainer state finds the disk full from its `at`-th call on."""
    import errno

    import grpo.checkpoint

    calls, real = [0], torch.save

    def save(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(grpo.checkpoint.torch, "save", save)


def test_a_full_disk_stops_the_run_with_one_line_naming_what_it_kept_and_resume_continues(
    tmp_path, model_dir, capsys, monkeypatch
):
    out = tmp_path / "run"
    failing_save(monkeypatch, at=2)  # step 1's checkpoint is written, step 2's finds the disk full
    code, err = run(train_args(model_dir, out, "--steps", "3"), capsys)
    assert code == train.EXIT_DISK_FULL == 4 and "Traceback" not in err
    kept = out / "checkpoints" / "step-00000001"
    assert f"error: the disk of {out} is full: the run stopped after step 2, and its newest complete " in err
    assert f"checkpoint is {kept}" in err and f"python train.py --resume {out}" in err
    # the half-written checkpoint is gone, step 1's is whole, and metrics.jsonl holds the steps that ran
    assert [s for s, _ in checkpoints(out)] == [1] and sorted(
        p.name for p in (out / "checkpoints").iterdir()
    ) == ["step-00000001"]
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not (out / "final").exists()

    monkeypatch.undo()  # space freed
    code, err = run(["--resume", out], capsys)
    assert code == 0, err
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
    ]


def test_a_disk_full_before_any_checkpoint_says_the_run_cannot_be_resumed(
    tmp_path, model_dir, capsys, monkeypatch
):
    out = tmp_path / "run"
    failing_save(monkeypatch, at=1)
    code, err = run(train_args(model_dir, out, "--steps", "2"), capsys)
    assert code == train.EXIT_DISK_FULL
    assert "the run stopped after step 1, and it has no complete checkpoint yet" in err
    assert "start it again (--overwrite)" in err and "--resume" not in err
    assert list((out / "checkpoints").iterdir()) == []  # nothing half-written left behind


def test_a_disk_with_less_space_than_the_checkpoints_take_is_warned_of_before_the_first_step(
    tmp_path, model_dir, capsys, monkeypatch
):
    import collections

    from grpo.models import load_model

    weights = sum(
        p.numel() * 4 for p in load_model(str(model_dir), torch.device("cpu"), torch.float32).parameters()
    )
    # every weight trains: a checkpoint holds the weights and AdamW's two moments, 3 × the weights' bytes;
    # 3 steps saved every step, 2 kept: 3 checkpoints at once while the third is written
    need = 3 * 3 * weights
    usage = collections.namedtuple("usage", "total used free")
    for free, warned in ((need - 1, True), (need, False)):
        monkeypatch.setattr("grpo.run.shutil.disk_usage", lambda path, free=free: usage(free, 0, free))
        code, err = run(train_args(model_dir, tmp_path / f"run-{free}", "--steps", "3"), capsys)
        assert code == 0, err  # a warning, not a refusal: the estimate may be off, space may be freed
        assert ("warning: the disk of" in err) == warned, err
        if warned:
            assert f"this run's checkpoints take about {need / 1e9:.2f} GB at once" in err
            assert "--keep-checkpoints 2" in err
    # what a checkpoint holds on disk: the weights (and a header), AdamW's two moments (and the RNG states)
    written = checkpoints(tmp_path / f"run-{need}")[-1][1]
    assert weights <= (written / "model" / "model.safetensors").stat().st_size <= weights + 16 * 1024
    assert 2 * weights <= (written / STATE_FILE).stat().st_size <= 2 * weights + 128 * 1024
