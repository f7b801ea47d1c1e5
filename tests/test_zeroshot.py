"""Zero-shot evaluation: local task files, lm-eval's prompts, scores checked by hand, errors, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from llmprune.cli import main  # noqa: E402
from llmprune.errors import LlmpruneError  # noqa: E402
from llmprune.eval.zeroshot import evaluate_zeroshot, merge_item_ranges, offline  # noqa: E402
from llmprune.eval.zeroshot_tasks import TASKS, locate, parse_tasks, write_task_dir  # noqa: E402

ROWS = {
    "piqa": 1838,
    "hellaswag": 10042,
    "winogrande": 1267,
    "arc_easy": 2376,
    "arc_challenge": 1172,
    "boolq": 3270,
    "openbookqa": 500,
}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _expected_first(task: str, row: dict) -> tuple[object, list[str], object]:
    """lm-eval's prompt, choices and target for ``row``, written out by hand from its task yamls."""
    if task == "piqa":
        return f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]], row["label"]
    if task == "hellaswag":
        return row["query"], row["choices"], row["label"]
    if task == "winogrande":
        i = row["sentence"].index("_")
        return (
            {"1": 0, "2": 1}[row["answer"]],
            [row["sentence"][:i] + row["option1"], row["sentence"][:i] + row["option2"]],
            row["sentence"][i + 1 :].strip(),
        )
    if task in ("arc_easy", "arc_challenge"):
        return (
            f"Question: {row['question']}\nAnswer:",
            row["choices"]["text"],
            row["choices"]["label"].index(row["answerKey"]),
        )
    if task == "boolq":
        return f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:", ["no", "yes"], row["label"]
    return row["question_stem"], row["choices"]["text"], row["choices"]["label"].index(row["answerKey"].lstrip())


@pytest.fixture(scope="module")
def lm_eval_tasks(shared_data: Path, tmp_path_factory) -> dict:
    """All seven tasks built by lm-eval from the shared files through our task folder."""
    from lm_eval.tasks import TaskManager

    files = [locate(t, shared_data) for t in TASKS.values()]
    folder = write_task_dir(files, tmp_path_factory.mktemp("tasks"))
    with offline():
        tasks = TaskManager(include_path=str(folder), include_defaults=False).load(
            [t.lm_eval_name for t in TASKS.values()]
        )["tasks"]
    return {name.removeprefix("llmprune_"): task for name, task in tasks.items()}


@pytest.mark.parametrize("task", list(TASKS))
def test_task_file_loads_with_lm_eval_prompts(shared_data: Path, lm_eval_tasks: dict, task: str) -> None:
    f = locate(TASKS[task], shared_data)
    assert f.rows == ROWS[task] and len(f.sha256) == 64
    lm_task = lm_eval_tasks[task]
    docs = list(lm_task.eval_docs)
    assert len(docs) == ROWS[task]
    text, choices, target = _expected_first(task, _rows(f.path)[0])
    doc = docs[0]
    assert lm_task.doc_to_text(doc) == text
    assert lm_task.doc_to_choice(doc) == choices
    assert lm_task.doc_to_target(doc) == target
    assert lm_task.config.num_fewshot in (None, 0)
    metrics = {m["metric"] for m in lm_task.config.metric_list}
    assert metrics == set(TASKS[task].metrics)


def test_parse_tasks() -> None:
    assert parse_tasks("all") == list(TASKS)
    assert parse_tasks("piqa, boolq,piqa") == ["piqa", "boolq"]
    with pytest.raises(LlmpruneError, match="unknown zero-shot task 'nosuch'"):
        parse_tasks("piqa,nosuch")


# --- scoring checked by hand -------------------------------------------------------------


def _loglik(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context), split into tokens the way lm-eval does for causal LMs."""
    whole = tok.encode(context + continuation)
    ctx = tok.encode(context)
    cont = whole[len(ctx) :]
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))


def _hand_scores(model, tok, task: str, rows: list[dict]) -> dict:
    acc, acc_norm = [], []
    for row in rows:
        text, choices, target = _expected_first(task, row)
        if task == "winogrande":  # partial evaluation: contexts vary, the continuation is fixed
            lls = [_loglik(model, tok, c, " " + target) for c in choices]
            gold = text
        else:
            lls = [_loglik(model, tok, text, " " + c) for c in choices]
            gold = target
        acc.append(float(max(range(len(lls)), key=lambda i: lls[i]) == gold))
        norm = [ll / len(c) for ll, c in zip(lls, choices)]
        acc_norm.append(float(max(range(len(norm)), key=lambda i: norm[i]) == gold))
    return {"acc": sum(acc) / len(acc), "acc_norm": sum(acc_norm) / len(acc_norm)}


def _small_data_dir(shared_data: Path, out: Path, tasks: list[str], n: int, max_chars: int = 400) -> Path:
    """The first ``n`` short rows of each task (the tiny model has 256 positions)."""
    (out / "zeroshot").mkdir(parents=True)
    for task in tasks:
        spec = TASKS[task]
        rows = [r for r in _rows(shared_data / "zeroshot" / spec.filename) if len(json.dumps(r)) < max_chars][:n]
        (out / "zeroshot" / spec.filename).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.mark.parametrize("task", ["piqa", "winogrande", "arc_easy"])
def test_scores_match_hand_computation(shared_data: Path, tmp_path: Path, tiny_llama, toy_tokenizer, task: str) -> None:
    data = _small_data_dir(shared_data, tmp_path, [task], n=12)
    rows = _rows(data / "zeroshot" / TASKS[task].filename)
    result = evaluate_zeroshot(tiny_llama, toy_tokenizer, task, data, batch_size=1)
    score = result["zeroshot"][task]
    hand = _hand_scores(tiny_llama, toy_tokenizer, task, rows)
    assert score["n"] == len(rows) == 12
    assert score["acc"] == pytest.approx(hand["acc"], abs=1e-12)
    if "acc_norm" in TASKS[task].metrics:
        assert score["acc_norm"] == pytest.approx(hand["acc_norm"], abs=1e-12)
    else:
        assert score["acc_norm"] is None
    proto = result["protocol"][task]
    assert proto["num_fewshot"] == 0 and proto["batch_size"] == 1 and proto["limit"] is None
    assert proto["engine"].startswith("lm-eval ") and len(proto["sha256"]) == 16


def test_limit_takes_the_first_items(shared_data: Path, tmp_path: Path, tiny_llama, toy_tokenizer) -> None:
    data = _small_data_dir(shared_data, tmp_path, ["piqa"], n=10)
    rows = _rows(data / "zeroshot" / "piqa_validation.jsonl")
    result = evaluate_zeroshot(tiny_llama, toy_tokenizer, ["piqa"], data, limit=3, batch_size=2)
    assert result["zeroshot"]["piqa"]["n"] == 3
    assert result["protocol"]["piqa"]["limit"] == 3 and result["protocol"]["piqa"]["n_available"] == 10
    hand = _hand_scores(tiny_llama, toy_tokenizer, "piqa", rows[:3])
    assert result["zeroshot"]["piqa"]["acc"] == pytest.approx(hand["acc"], abs=1e-12)


def test_item_ranges_score_those_items_and_join_to_the_full_set(
    shared_data: Path, tmp_path: Path, tiny_llama, toy_tokenizer
) -> None:
    data = _small_data_dir(shared_data, tmp_path, ["arc_easy"], n=10)
    rows = _rows(data / "zeroshot" / TASKS["arc_easy"].filename)
    full = evaluate_zeroshot(tiny_llama, toy_tokenizer, ["arc_easy"], data, batch_size=3)["zeroshot"]["arc_easy"]
    parts = []
    for items in ("0:4", (4, 99)):  # the second range is clipped to the file's 10 items
        res = evaluate_zeroshot(tiny_llama, toy_tokenizer, ["arc_easy"], data, batch_size=3, items=items)
        proto = res["protocol"]["arc_easy"]
        parts.append({**res["zeroshot"]["arc_easy"], "items": proto["items"]})
        start, end = proto["items"]
        hand = _hand_scores(tiny_llama, toy_tokenizer, "arc_easy", rows[start:end])
        assert res["zeroshot"]["arc_easy"]["n"] == end - start and proto["limit"] is None
        assert res["zeroshot"]["arc_easy"]["acc"] == pytest.approx(hand["acc"], abs=1e-12)
        assert res["zeroshot"]["arc_easy"]["acc_norm"] == pytest.approx(hand["acc_norm"], abs=1e-12)
    assert [p["items"] for p in parts] == [[0, 4], [4, 10]]
    joined = merge_item_ranges(parts, 10)
    assert joined["n"] == 10
    assert joined["acc"] == full["acc"] and joined["acc_norm"] == full["acc_norm"]  # bit for bit
    assert joined["acc_stderr"] == pytest.approx(full["acc_stderr"], abs=1e-12)
    with pytest.raises(LlmpruneError, match=r"starts past the end of arc_easy_test.jsonl \(10 items\)"):
        evaluate_zeroshot(tiny_llama, toy_tokenizer, ["arc_easy"], data, items="10:20")


def test_no_git_probe_noise_outside_a_checkout(
    shared_data: Path, tmp_path: Path, tiny_llama, toy_tokenizer, monkeypatch, capfd
) -> None:
    """lm-eval runs ``git describe`` in the working directory; outside a git checkout that
    printed ``fatal: not a git repository`` on every run."""
    import lm_eval.evaluator

    probe = lm_eval.evaluator.get_git_commit_hash
    data = _small_data_dir(shared_data, tmp_path / "data", ["piqa"], n=4)
    work = tmp_path / "not-a-checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git must not find a repository above
    result = evaluate_zeroshot(tiny_llama, toy_tokenizer, ["piqa"], data, limit=2, batch_size=2)
    assert result["zeroshot"]["piqa"]["n"] == 2
    assert "not a git repository" not in capfd.readouterr().err
    assert lm_eval.evaluator.get_git_commit_hash is probe  # restored


def test_merge_item_ranges_refuses_gaps_and_overlaps() -> None:
    a = {"items": [0, 4], "n": 4, "acc": 0.5, "acc_norm": None}
    with pytest.raises(LlmpruneError, match=r"run --items 4:10"):
        merge_item_ranges([a], 10)
    with pytest.raises(LlmpruneError, match="expected one starting at 4, got 3:10"):
        merge_item_ranges([a, {"items": [3, 10], "n": 7, "acc": 1.0, "acc_norm": None}], 10)
    joined = merge_item_ranges([{"items": [4, 10], "n": 6, "acc": 1.0, "acc_norm": None}, a], 10)
    assert joined["acc"] == pytest.approx(0.8) and joined["acc_norm"] is None
    # counts are joined, not float means: 1/3 and 2/3 of 3 + 3 items give exactly 3 / 6
    thirds = [
        {"items": [0, 3], "n": 3, "acc": 1 / 3, "acc_norm": 2 / 3},
        {"items": [3, 6], "n": 3, "acc": 2 / 3, "acc_norm": 1 / 3},
    ]
    joined = merge_item_ranges(thirds, 6)
    assert joined["acc"] == 0.5 and joined["acc_norm"] == 0.5


# --- errors ------------------------------------------------------------------------------


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(LlmpruneError) as info:
        locate(TASKS["piqa"], tmp_path)
    msg = str(info.value)
    assert "piqa_validation.jsonl not found" in msg and "--data-dir" in msg and "\n" not in msg
    with pytest.raises(LlmpruneError, match="needs local data: pass --data-dir"):
        locate(TASKS["piqa"], None)


@pytest.mark.parametrize(
    "content,msg",
    [
        ('{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}\n{not json\n', "line 2 is not JSON"),
        ('{"goal": "g", "sol1": "a", "label": 0}\n', "line 1: field 'sol2' must be a string"),
        ('{"goal": "g", "sol1": "a", "sol2": "b", "label": 2}\n', "field 'label' must be an integer in [0, 1]"),
        ('["goal"]\n', "not a JSON object"),
        ("\n", "is empty"),
    ],
)
def test_malformed_file_is_one_clear_line(tmp_path: Path, content: str, msg: str) -> None:
    (tmp_path / "zeroshot").mkdir()
    (tmp_path / "zeroshot" / "piqa_validation.jsonl").write_text(content)
    with pytest.raises(LlmpruneError) as info:
        locate(TASKS["piqa"], tmp_path)
    text = str(info.value)
    assert msg in text and "piqa_validation.jsonl" in text and "\n" not in text


def test_cli_errors(capsys, tiny_llama_dir: Path, tmp_path: Path) -> None:
    code = main(["eval", str(tiny_llama_dir), "--zeroshot", "piqa", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: zero-shot data file") and "not found" in err and "\n" not in err
    code = main(["eval", str(tiny_llama_dir), "--zeroshot", "nosuch", "--data-dir", str(tmp_path)])
    assert code == 2 and "unknown zero-shot task" in capsys.readouterr().err
    code = main(["eval", "smollm2-135m", "--ppl", "wikitext2", "--save"])
    assert code == 2 and "--save writes eval.json" in capsys.readouterr().err
    code = main(["eval", str(tiny_llama_dir), "--zeroshot", "piqa", "--items", "5:2"])
    assert code == 2 and "must satisfy 0 <= START < END" in capsys.readouterr().err
    code = main(["eval", str(tiny_llama_dir), "--zeroshot", "piqa", "--items", "a:b"])
    assert code == 2 and "must be START:END with integers" in capsys.readouterr().err
    code = main(["eval", str(tiny_llama_dir), "--zeroshot", "piqa", "--items", "0:5", "--limit", "3"])
    assert code == 2 and "give one of them" in capsys.readouterr().err


def test_boolq_rows_check(tmp_path: Path) -> None:
    """The data README warns that the source's boolq labels were strings; ours must be ints."""
    (tmp_path / "zeroshot").mkdir()
    (tmp_path / "zeroshot" / "boolq_validation.jsonl").write_text(
        '{"question": "q", "passage": "p", "idx": 0, "label": "true"}\n'
    )
    with pytest.raises(LlmpruneError, match="field 'label' must be an integer"):
        locate(TASKS["boolq"], tmp_path)


# --- CLI ---------------------------------------------------------------------------------


def test_cli_eval_zeroshot_and_save(capsys, shared_data: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model_dir)
    code = main(["eval", str(model_dir), "--seqlen", "32", "--max-windows", "1", "--save", "--quiet", "--json"])
    assert code == 0
    capsys.readouterr()
    code = main(
        [
            "eval",
            str(model_dir),
            "--zeroshot",
            "piqa",
            "--limit",
            "4",
            "--data-dir",
            str(shared_data),
            "--save",
            "--quiet",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ppl"] == {} and result["zeroshot"]["piqa"]["n"] == 4
    assert 0.0 <= result["zeroshot"]["piqa"]["acc"] <= 1.0
    assert (
        result["protocol"]["piqa"]["limit"] == 4
        and result["protocol"]["piqa"]["file"] == "zeroshot/piqa_validation.jsonl"
    )
    saved = json.loads((model_dir / "eval.json").read_text())
    assert "wikitext2" in saved["ppl"] and saved["zeroshot"]["piqa"] == result["zeroshot"]["piqa"]
    assert set(saved["protocol"]) == {"wikitext2", "piqa"}
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no temp file left
    code = main(
        ["eval", str(model_dir), "--zeroshot", "piqa", "--limit", "2", "--data-dir", str(shared_data), "--quiet"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "piqa: acc " in out and '"num_fewshot": 0' in out and "zero-shot mean acc" in out
