"""Fault injection: silently wrong results, data loss, foreign code and tracebacks that
llmprune must turn into one-line errors (or prevent). Tiny models only.

Sections follow the guarantees: data identity (zero-shot cache), finite numbers and
weights, checkpoint integrity, length checks, output safety (force, concurrency,
signals, disk), trust (no checkpoint code), and argument types (plans and API).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llmprune
from llmprune.cli import main
from llmprune.errors import LlmpruneError

REPO = Path(__file__).resolve().parents[1]
SRC = Path(llmprune.__file__).resolve().parents[1]  # the llmprune under test (subprocesses use it too)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err.strip()


def _one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2 and one ``error:`` line, the last thing on stderr (progress bars of the
    model loading before it are fine), no traceback."""
    assert code == 2, err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], err


def _copy_model(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _rewrite_safetensors(path: Path, edit) -> None:
    """Apply ``edit(dict of tensors) -> dict`` to ``path/model.safetensors``."""
    from safetensors.torch import load_file, save_file

    file = path / "model.safetensors"
    tensors = load_file(str(file))
    save_file(edit(dict(tensors)), str(file), metadata={"format": "pt"})


# --- 1. zero-shot data identity -------------------------------------------------------------


def test_zeroshot_scores_the_file_it_hashes_after_an_in_place_edit(
    shared_data: Path, tmp_path: Path, monkeypatch, tiny_llama, toy_tokenizer
) -> None:
    """Same path, size and mtime, one label flipped: the score must follow the new bytes."""
    from llmprune.eval.zeroshot import evaluate_zeroshot

    monkeypatch.setenv("LLMPRUNE_CACHE", str(tmp_path / "cache"))
    rows = []
    with open(shared_data / "zeroshot" / "piqa_validation.jsonl") as fh:
        for line in fh:
            row = json.loads(line)
            if len(line) < 300:
                rows.append(row)
            if len(rows) == 8:
                break
    file = tmp_path / "data" / "zeroshot" / "piqa_validation.jsonl"
    file.parent.mkdir(parents=True)
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stat = file.stat()
    first = evaluate_zeroshot(tiny_llama, toy_tokenizer, "piqa", tmp_path / "data", batch_size=8)
    rows[0]["label"] = 1 - rows[0]["label"]  # same length, other answer
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file.stat().st_size == stat.st_size and file.stat().st_mtime_ns == stat.st_mtime_ns
    second = evaluate_zeroshot(tiny_llama, toy_tokenizer, "piqa", tmp_path / "data", batch_size=8)
    assert second["protocol"]["piqa"]["sha256"] != first["protocol"]["piqa"]["sha256"]
    assert abs(second["zeroshot"]["piqa"]["acc"] - first["zeroshot"]["piqa"]["acc"]) == pytest.approx(1 / 8)


def test_zeroshot_invalid_utf8_is_one_line(tmp_path: Path) -> None:
    from llmprune.eval.zeroshot_tasks import TASKS, locate

    file = tmp_path / "zeroshot" / "piqa_validation.jsonl"
    file.parent.mkdir()
    good = json.dumps({"goal": "a", "sol1": "b", "sol2": "c", "label": 0}).encode()
    file.write_bytes(good + b"\n" + good.replace(b'"a"', b'"\xff\xfe"') + b"\n")
    with pytest.raises(LlmpruneError, match=r"line 2 is not valid UTF-8"):
        locate(TASKS["piqa"], tmp_path)


def test_corpus_invalid_utf8_is_one_line(tmp_path: Path) -> None:
    from llmprune.data import load_text

    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.test.txt").write_bytes(b"fine text\n\xff\xfe broken\n")
    with pytest.raises(LlmpruneError, match="not valid UTF-8"):
        load_text("ptb", "test", data_dir=tmp_path)


# --- 2. finite numbers and weights ---------------------------------------------------------


def test_zeroshot_refuses_nan_weights(tmp_path: Path, tiny_llama, toy_tokenizer) -> None:
    import copy

    from llmprune.eval.zeroshot import evaluate_zeroshot

    model = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    data = tmp_path / "zeroshot" / "piqa_validation.jsonl"
    data.parent.mkdir()
    data.write_text(json.dumps({"goal": "a", "sol1": "b", "sol2": "c", "label": 1}) + "\n")
    with pytest.raises(LlmpruneError, match=r"model\.layers\.1\.mlp\.down_proj\.weight holds NaN"):
        evaluate_zeroshot(model, toy_tokenizer, "piqa", tmp_path, batch_size=1)


def test_zeroshot_refuses_nonfinite_logits(tmp_path: Path, monkeypatch, tiny_llama, toy_tokenizer) -> None:
    """Finite weights whose logits overflow: the forward hook catches them."""
    import copy

    from llmprune.eval.zeroshot import evaluate_zeroshot

    monkeypatch.setenv("LLMPRUNE_CACHE", str(tmp_path / "cache"))
    model = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        model.model.norm.weight.fill_(1e30)  # finite weights, but the logits overflow to inf
        model.lm_head.weight.mul_(1e10)
    data = tmp_path / "zeroshot" / "piqa_validation.jsonl"
    data.parent.mkdir()
    data.write_text(json.dumps({"goal": "a", "sol1": "b", "sol2": "c", "label": 1}) + "\n")
    with pytest.raises(LlmpruneError, match="NaN/inf logits"):
        evaluate_zeroshot(model, toy_tokenizer, "piqa", tmp_path, batch_size=1)


def test_prune_refuses_to_save_nan_weights(capsys, tmp_path: Path, tiny_llama_dir: Path) -> None:
    model_dir = _copy_model(tiny_llama_dir, tmp_path / "nan-model")

    def poison(t: dict) -> dict:
        t["model.layers.0.self_attn.v_proj.weight"][3, 5] = float("nan")
        return t

    _rewrite_safetensors(model_dir, poison)
    out = tmp_path / "out"
    code, _, err = _run(
        capsys,
        "prune",
        "--model",
        str(model_dir),
        "--method",
        "magnitude",
        "--ratio",
        "0.5",
        "--out",
        str(out),
        "--quiet",
    )
    _one_line_error(code, err, "model.layers.0.self_attn.v_proj.weight", "NaN")
    assert not out.exists() and not list(tmp_path.glob(".out*"))


# --- 3. checkpoint integrity ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fault,needle",
    [
        ("missing_embedding", "model.embed_tokens.weight (outside the decoder blocks) is missing"),
        ("int8_k_proj", "model.layers.0.self_attn.k_proj.weight (layer 0) is stored as I8"),
        ("unexpected", "model.layers.0.extra.weight is not part of the model"),
    ],
)
def test_checkpoint_validation(capsys, tmp_path: Path, tiny_llama_dir: Path, fault: str, needle: str) -> None:
    model_dir = _copy_model(tiny_llama_dir, tmp_path / "m")

    def edit(t: dict) -> dict:
        if fault == "missing_embedding":
            del t["model.embed_tokens.weight"]
        elif fault == "int8_k_proj":
            key = "model.layers.0.self_attn.k_proj.weight"
            t[key] = t[key].to(torch.int8)
        else:
            t["model.layers.0.extra.weight"] = torch.zeros(3)
        return t

    _rewrite_safetensors(model_dir, edit)
    code, _, err = _run(capsys, "eval", str(model_dir), "--seqlen", "32", "--max-windows", "1", "--quiet")
    _one_line_error(code, err, needle)


def test_pickled_only_checkpoint_is_refused(capsys, tmp_path: Path, tiny_llama, toy_tokenizer) -> None:
    model_dir = tmp_path / "bin-only"
    tiny_llama.save_pretrained(model_dir)
    toy_tokenizer.save_pretrained(model_dir)
    (model_dir / "model.safetensors").unlink()
    torch.save(tiny_llama.state_dict(), model_dir / "pytorch_model.bin")
    code, _, err = _run(capsys, "eval", str(model_dir), "--seqlen", "32", "--max-windows", "1", "--quiet")
    _one_line_error(code, err, "pickled weights", "safetensors")


@pytest.fixture()
def layout_dir(tmp_path: Path, tiny_llama, toy_tokenizer) -> Path:
    """A heterogeneous (layout) checkpoint with residual index buffers."""
    import copy

    from llmprune.models import get_adapter
    from llmprune.surgery import StructuredPlan, apply_plan

    model = copy.deepcopy(tiny_llama)
    plan = {0: {"residual": {"attn_in": list(range(0, 64, 2)), "mlp_out": list(range(10, 50))}}}
    apply_plan(get_adapter(model), StructuredPlan.from_dict({"layers": plan}))
    out = tmp_path / "layout"
    llmprune.save(model, toy_tokenizer, out, {"method": "manual"})
    assert json.loads((out / "report.json").read_text())["export"]["kind"] == "layout"
    return out


def test_layout_checkpoint_still_loads_without_running_its_code(layout_dir: Path) -> None:
    (layout_dir / "modeling_llmprune.py").write_text("raise SystemExit('checkpoint code was executed')\n")
    model, _ = llmprune.load(layout_dir)
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


@pytest.mark.parametrize("fault,needle", [("duplicate", "repeats residual indices"), ("range", "outside [0, 64)")])
def test_layout_index_buffers_checked(capsys, layout_dir: Path, fault: str, needle: str) -> None:
    def edit(t: dict) -> dict:
        key = next(k for k in t if k.endswith("in_index"))
        t[key] = t[key].clone()
        t[key][1] = t[key][0] if fault == "duplicate" else 64
        return t

    _rewrite_safetensors(layout_dir, edit)
    code, _, err = _run(capsys, "eval", str(layout_dir), "--seqlen", "32", "--max-windows", "1", "--quiet")
    _one_line_error(code, err, needle)


# --- 4. length checks ----------------------------------------------------------------------


def test_seqlen_above_positions_is_refused(
    capsys, tmp_path: Path, tiny_llama, toy_tokenizer, tiny_llama_dir: Path
) -> None:
    with pytest.raises(LlmpruneError, match="exceeds the model's 256 positions"):
        llmprune.evaluate(tiny_llama, toy_tokenizer, seqlen=512, max_windows=1, progress=False)
    code, _, err = _run(
        capsys,
        "prune",
        "--model",
        str(tiny_llama_dir),
        "--method",
        "wanda",
        "--ratio",
        "0.5",
        "--seqlen",
        "100000",
        "--calib-samples",
        "1",
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    )
    _one_line_error(code, err, "--seqlen 100000 exceeds the model's 256 positions")


def test_calibration_text_too_short() -> None:
    from llmprune.data import calibration_windows

    ids = torch.arange(40)
    assert calibration_windows(ids, n=4, seqlen=32).shape == (4, 32)
    with pytest.raises(LlmpruneError, match="only 8 distinct windows"):
        calibration_windows(ids, n=16, seqlen=32)


# --- 5. output safety ----------------------------------------------------------------------


def _save(model, tok, out, force: bool = False) -> None:
    llmprune.save(model, tok, out, {"method": "test"}, force=force)


def test_force_never_replaces_a_foreign_directory(capsys, tmp_path: Path, tiny_llama_dir: Path) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("years of work")
    code, _, err = _run(
        capsys,
        "prune",
        "--model",
        str(tiny_llama_dir),
        "--method",
        "magnitude",
        "--ratio",
        "0.5",
        "--out",
        str(out),
        "--force",
        "--quiet",
    )
    _one_line_error(code, err, "--force replaces only an llmprune output")
    assert (out / "chapter1.tex").read_text() == "years of work"


def test_force_replaces_an_llmprune_output_or_an_empty_directory(tmp_path: Path, tiny_llama, toy_tokenizer) -> None:
    out = tmp_path / "run"
    _save(tiny_llama, toy_tokenizer, out)
    (out / "stale.txt").write_text("from the earlier run")
    _save(tiny_llama, toy_tokenizer, out, force=True)
    assert not (out / "stale.txt").exists() and (out / "report.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    _save(tiny_llama, toy_tokenizer, empty, force=True)
    assert (empty / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_concurrent_writers_cannot_both_succeed(tmp_path: Path) -> None:
    """Both start before ``out`` exists; the second to finish must fail, not replace the first."""
    from llmprune.export import atomic_directory

    out = tmp_path / "out"
    first, second = atomic_directory(out), atomic_directory(out)
    tmp_a, tmp_b = first.__enter__(), second.__enter__()
    (tmp_a / "report.json").write_text('{"method": "a"}')
    (tmp_b / "report.json").write_text('{"method": "b"}')
    first.__exit__(None, None, None)
    with pytest.raises(LlmpruneError, match="appeared while this run was working"):
        second.__exit__(None, None, None)
    assert json.loads((out / "report.json").read_text())["method"] == "a"
    assert not tmp_b.exists()


_RACER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {src!r})
from llmprune.errors import LlmpruneError
from llmprune.export import atomic_directory
out, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
try:
    with atomic_directory(out) as tmp:
        (tmp / "report.json").write_text('{{"method": "%s"}}' % name)
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.01)
except LlmpruneError as exc:
    print("error:", exc)
    sys.exit(2)
"""


def test_concurrent_processes_one_wins(tmp_path: Path) -> None:
    """Two processes both past the start check, then released together: exactly one succeeds."""
    out, go = tmp_path / "out", tmp_path / "go"
    code = _RACER.format(src=str(SRC))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(out), name, str(go)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for name in ("a", "b")
    ]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    go.touch()
    results = [(p.wait(timeout=60), p.stdout.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    winner = "a" if results[0][0] == 0 else "b"
    assert json.loads((out / "report.json").read_text())["method"] == winner
    assert "appeared while this run was working" in results[1 if winner == "a" else 0][1]


@pytest.mark.parametrize("target", [".", ".."])
def test_out_containing_the_cwd_is_refused(tmp_path: Path, monkeypatch, tiny_llama, toy_tokenizer, target: str) -> None:
    work = tmp_path / "run" / "inner"
    work.mkdir(parents=True)
    (tmp_path / "run" / "report.json").write_text('{"method": "x"}')
    monkeypatch.chdir(work if target == ".." else tmp_path / "run")
    with pytest.raises(LlmpruneError, match="contains\\) the current directory"):
        _save(tiny_llama, toy_tokenizer, target, force=True)
    assert (tmp_path / "run" / "report.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def _mount_tmpfs(path: Path, options: str) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0
    )


@pytest.fixture()
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    if not _mount_tmpfs(mount, "size=256k"):
        pytest.skip("needs root and tmpfs mounts to make a small disk (ENOSPC); not running as root here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture()
def read_only_dir(tmp_path: Path):
    path = tmp_path / "ro"
    if os.geteuid() == 0:
        if not _mount_tmpfs(path, "ro,size=64k"):
            pytest.skip("running as root without tmpfs mounts: cannot make a read-only folder")
        yield path
        subprocess.run(["umount", "-l", str(path)], check=False)
    else:
        path.mkdir()
        path.chmod(0o555)
        yield path
        path.chmod(0o755)


def test_unwritable_out_fails_before_pruning(capsys, read_only_dir: Path, tiny_llama_dir: Path) -> None:
    code, out, err = _run(
        capsys,
        "prune",
        "--model",
        str(tiny_llama_dir),
        "--method",
        "magnitude",
        "--ratio",
        "0.5",
        "--out",
        str(read_only_dir / "out"),
    )
    _one_line_error(code, err, "is not writable")
    assert "magnitude" not in out  # refused before the pruning ran


def test_too_little_space_fails_before_pruning(capsys, small_disk: Path, tiny_llama_dir: Path) -> None:
    code, out, err = _run(
        capsys,
        "prune",
        "--model",
        str(tiny_llama_dir),
        "--method",
        "magnitude",
        "--ratio",
        "0.5",
        "--out",
        str(small_disk / "out"),
    )
    _one_line_error(code, err, "not enough free space")
    assert "magnitude" not in out
    assert list(small_disk.iterdir()) == []


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(small_disk: Path) -> None:
    from llmprune.export import atomic_directory

    with pytest.raises(LlmpruneError, match="nothing was written") as info:
        with atomic_directory(small_disk / "out") as tmp:
            (tmp / "weights.bin").write_bytes(b"\0" * (1 << 20))
    assert "\n" not in str(info.value) and "No space left" in str(info.value)
    assert list(small_disk.iterdir()) == []


_SLOW_SAVE = """
import sys, time
sys.path.insert(0, {src!r})
import llmprune
model, tok = llmprune.load({model!r})
def slow(path, *args, **kwargs):
    (path / "part.bin").write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)
model.save_pretrained = slow
llmprune.save(model, tok, {out!r}, {{"method": "test"}})
"""


def _start_slow_save(tmp_path: Path, model_dir: Path) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "out"
    code = _SLOW_SAVE.format(src=str(SRC), model=str(model_dir), out=str(out))
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.strip() == "writing", proc.stderr.read()
    assert len(list(tmp_path.glob(".out.*"))) == 1  # the temporary folder exists now
    return proc, out


def test_sigterm_during_save_leaves_nothing(tmp_path: Path, tiny_llama_dir: Path) -> None:
    proc, out = _start_slow_save(tmp_path, tiny_llama_dir)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert not out.exists() and list(tmp_path.glob(".out*")) == []


def test_kill9_leftovers_are_swept_by_the_next_run(tmp_path: Path, capsys) -> None:
    from llmprune.export import check_output_dir

    out, go = tmp_path / "out", tmp_path / "never"
    proc = subprocess.Popen(
        [sys.executable, "-c", _RACER.format(src=str(SRC)), str(out), "a", str(go)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait(timeout=30)
    left = list(tmp_path.glob(".out.*"))
    assert len(left) == 1
    check_output_dir(out, force=False)
    assert not left[0].exists()
    assert f"removed {left[0]}" in capsys.readouterr().err


def test_out_of_memory_is_one_line(capsys, monkeypatch, tmp_path: Path) -> None:
    from llmprune import api

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(api, "load", oom)
    code, _, err = _run(capsys, "eval", "smollm2-135m", "--quiet")
    _one_line_error(code, err, "out of memory")


# --- 6. trust: no checkpoint code ----------------------------------------------------------


def test_hostile_auto_map_is_refused_without_prompt(tmp_path: Path, tiny_llama_dir: Path) -> None:
    hostile = _copy_model(tiny_llama_dir, tmp_path / "hostile")
    marker = tmp_path / "code-was-executed"
    config = json.loads((hostile / "config.json").read_text())
    config.update(
        model_type="evil_llama",
        architectures=["EvilForCausalLM"],
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"},
    )
    (hostile / "config.json").write_text(json.dumps(config))
    (hostile / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [sys.executable, "-m", "llmprune", "eval", str(hostile), "--seqlen", "32", "--max-windows", "1", "--quiet"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert err.startswith("error: ") and "\n" not in err and "never runs checkpoint code" in err, err
    assert "Do you wish" not in proc.stdout + proc.stderr
    assert not marker.exists()


def test_every_transformers_load_passes_trust_remote_code_false() -> None:
    """Static guard: each ``from_pretrained`` / ``from_config`` call in the package says
    ``trust_remote_code=False`` (the file copied into checkpoints is exempt)."""
    import ast

    offenders = []
    for file in (SRC / "llmprune").rglob("*.py"):
        if file.name == "modeling_llmprune.py":
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("from_pretrained", "from_config")
            ):
                kw = {k.arg: k.value for k in node.keywords}
                value = kw.get("trust_remote_code")
                if not (isinstance(value, ast.Constant) and value.value is False):
                    offenders.append(f"{file.relative_to(SRC)}:{node.lineno}")
    assert offenders == []


# --- 7. types in plans and the API ---------------------------------------------------------


@pytest.mark.parametrize(
    "edits,needle",
    [
        ({"remove_block": "no"}, "remove_block is 'no', not a boolean"),
        ({"remove_mlp": 1}, "remove_mlp is 1, not a boolean"),
        ({"remove_heads": "1,2"}, "remove_heads must be a list of integer indices"),
    ],
)
def test_plan_values_must_have_their_types(tmp_path: Path, edits: dict, needle: str) -> None:
    from llmprune.surgery import load_plan

    spec = tmp_path / "plan.yaml"
    key, value = next(iter(edits.items()))
    spec.write_text(f"layers:\n  1: {{{key}: {json.dumps(value)}}}\n")
    with pytest.raises(LlmpruneError, match=needle):
        load_plan(spec)


def test_yaml_boolean_plan_still_works(tmp_path: Path) -> None:
    from llmprune.surgery import load_plan

    spec = tmp_path / "plan.yaml"
    spec.write_text("layers:\n  1: {remove_block: false, remove_mlp: true}\n")
    plan = load_plan(spec)
    assert plan.layers[1].remove_block is False and plan.layers[1].remove_mlp is True


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(method=None, ratio=0.5), "method=None"),
        (dict(method="wanda", ratio=[0.5]), "ratio=[0.5]"),
        (dict(method="wanda", ratio=0.5, seqlen=64.5), "seqlen=64.5 must be an integer"),
        (
            dict(method="sparsegpt", ratio=0.5, seqlen=16, calib_samples=1, blocksize=0),
            "sparsegpt option blocksize=0: Input should be greater than or equal to 1",
        ),
        (dict(method="wanda", ratio=0.5, seqlen=16, calib_samples=1, tokenizer=None), "tokenizer=None"),
        (dict(method="wanda", ratio=0.5, calib_samples=True), "calib_samples=True must be an integer"),
    ],
)
def test_api_prune_argument_types(tiny_llama, toy_tokenizer, kwargs: dict, needle: str) -> None:
    kwargs = {"tokenizer": toy_tokenizer, **kwargs}
    tok = kwargs.pop("tokenizer")
    with pytest.raises(LlmpruneError) as info:
        llmprune.prune(tiny_llama, tok, progress=False, **kwargs)
    assert needle in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_api_cuda_without_cuda(tiny_llama, toy_tokenizer) -> None:
    with pytest.raises(LlmpruneError, match="CUDA is not available"):
        llmprune.prune(tiny_llama, toy_tokenizer, "wanda", ratio=0.5, seqlen=16, calib_samples=1, device="cuda")
    with pytest.raises(LlmpruneError, match="CUDA is not available"):
        llmprune.load("smollm2-135m", device="cuda")
    with pytest.raises(LlmpruneError, match="CUDA is not available"):
        llmprune.evaluate(tiny_llama, toy_tokenizer, seqlen=16, device="cuda")


def test_api_load_and_evaluate_argument_types(tiny_llama) -> None:
    with pytest.raises(LlmpruneError, match="model=123"):
        llmprune.load(123)
    with pytest.raises(LlmpruneError, match="tokenizer=None"):
        llmprune.evaluate(tiny_llama, None, seqlen=16, max_windows=1)


def test_report_with_malformed_report_json(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text('{"method": "wanda", "ratio": "half", "params_before": "many", "layers": 3}')
    code, _, err = _run(capsys, "report", str(run), "--out", str(tmp_path / "rep"))
    _one_line_error(code, err)
