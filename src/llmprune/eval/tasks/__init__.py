"""lm-eval task configs for the seven zero-shot tasks, read from local jsonl files.

Each ``<task>.yaml`` here is lm-eval's own config for that task (prompt, choices,
target, metrics) with ``dataset_path: json`` instead of a hub dataset. The data file is
not named here: :func:`llmprune.eval.zeroshot_tasks.write_task_dir` copies a template and
appends ``dataset_kwargs: {data_files: {<split>: <absolute path>}}`` for the user's
``--data-dir``, so the same folder serves our API and ``lm_eval --include_path``.
"""
