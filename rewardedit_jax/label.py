"""Label (source, edited, instruction) triplets with RewardEdit-style rewards through an LVLM judge.

    python -m rewardedit_jax.label --manifest edits.jsonl --out rewards.json [--model gpt-4o]
        [--base-url URL] [--azure] [--concurrency 8] [--rpm N] [--cache PATH] [--max-side 512] [--dry-run]

Manifest: JSON lines `{"id": str, "source": path, "edited": path, "instruction": str}`; relative paths are
relative to the manifest's folder. The whole manifest is checked before any request is sent.

Output: `OUT.json` in the `RewardEdit_20K.json` schema (id -> [following, preserving, quality], each
`{"Score": 0..5, "Negative Prompt": "<failure points or None>"}`), holding only fully labelled edits, in
manifest order; every other edit goes to `OUT.failures.jsonl` with the reason per perspective. Both are
written atomically at the end. Finished requests are kept in a SQLite cache (default `OUT.cache.sqlite`), so
an interrupted run resumes where it stopped and a re-run costs nothing.

The API key is read from OPENAI_API_KEY (Azure: AZURE_OPENAI_API_KEY) only. Exit status: 0 all labelled,
1 some edits failed (see the failures file), 2 bad usage, manifest or endpoint, 130 interrupted.
See docs/judge.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

from rewardedit_jax.io import PathError, atomic_write_text, check_creatable
from rewardedit_jax.judge.cache import AnswerCache
from rewardedit_jax.judge.client import JudgeFatalError, api_key_env_names, api_key_from_env
from rewardedit_jax.judge.config import JudgeConfig
from rewardedit_jax.judge.prompts import PromptSet
from rewardedit_jax.judge.runner import EditItem, ItemResult, Judge, ProgressBar

log = logging.getLogger("rewardedit_jax.label")


class ManifestError(ValueError):
    """A problem with the manifest, naming the file and line."""


def _image_problem(path: Path) -> str | None:
    """Why ``path`` is not an image the judge can send (not an image file, or a truncated or corrupt one as
    far as its format's checksums tell without decoding it), else None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except UnidentifiedImageError:
        return "not an image file PIL can read"
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports a broken file as any of these
        return f"cannot read the image ({' '.join(str(exc).split())})"
    return None


def read_manifest(path: str | os.PathLike) -> list[EditItem]:
    """Validated edits of a JSON-lines manifest; raises ManifestError naming the first bad line."""
    manifest = Path(path)
    if not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest}")
    base = manifest.resolve().parent
    items: list[EditItem] = []
    first_line: dict[str, int] = {}
    readable: set[Path] = set()
    with open(manifest, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{manifest}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(record, dict):
                raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
            for field in ("id", "source", "edited", "instruction"):
                if field not in record:
                    raise ManifestError(f"{where}: missing field {field!r}")
            item_id = record["id"]
            if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or str(item_id) == "":
                raise ManifestError(f"{where}: 'id' must be a non-empty string")
            item_id = str(item_id)
            if item_id in first_line:
                raise ManifestError(
                    f"{where}: duplicate id {item_id!r} (first on line {first_line[item_id]})"
                )
            first_line[item_id] = line_no
            instruction = record["instruction"]
            if not isinstance(instruction, str) or not instruction.strip():
                raise ManifestError(f"{where}: 'instruction' must be a non-empty string")
            paths = {}
            for field in ("source", "edited"):
                value = record[field]
                if not isinstance(value, str) or not value:
                    raise ManifestError(f"{where}: {field!r} must be a path string")
                resolved = Path(value) if os.path.isabs(value) else base / value
                if not resolved.is_file():
                    raise ManifestError(f"{where}: {field} image not found: {value}")
                if resolved not in readable:
                    problem = _image_problem(resolved)
                    if problem:
                        raise ManifestError(f"{where}: {field} image {value}: {problem}")
                    readable.add(resolved)
                paths[field] = str(resolved)
            items.append(EditItem(item_id, paths["source"], paths["edited"], instruction))
    if not items:
        raise ManifestError(f"{manifest}: no edits in the manifest")
    return items


def sibling_path(out: Path, suffix: str) -> Path:
    """OUT.json -> OUT<suffix> (e.g. OUT.failures.jsonl)."""
    stem = out.name[: -len(".json")] if out.name.endswith(".json") else out.name
    return out.with_name(stem + suffix)


def rewards_json(rewards: dict[str, list[dict]]) -> str:
    """The RewardEdit_20K.json text: a JSON object with one edit per line (valid JSON, easy to diff)."""
    if not rewards:
        return "{}\n"
    lines = [
        f"{json.dumps(key, ensure_ascii=False)}: {json.dumps(value, ensure_ascii=False)}"
        for key, value in rewards.items()
    ]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def failure_record(item: EditItem, result: ItemResult) -> dict:
    return {
        "id": item.id,
        "source": item.source,
        "edited": item.edited,
        "instruction": item.instruction,
        "failed": {p: {"reason": j.failure, "raw": j.raw} for p, j in result.judgments.items() if not j.ok},
    }


def build_parser() -> argparse.ArgumentParser:
    defaults = JudgeConfig()
    p = argparse.ArgumentParser(
        prog="python -m rewardedit_jax.label",
        description="Label (source, edited, instruction) edits with RewardEdit rewards via an LVLM judge.",
    )
    p.add_argument("--manifest", required=True, help="JSON lines: {id, source, edited, instruction}")
    p.add_argument("--out", required=True, help="output JSON in the RewardEdit_20K.json schema")
    p.add_argument("--model", default=defaults.model, help="model name (Azure: deployment name)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint, or the Azure endpoint")
    p.add_argument("--azure", action="store_true", help="use Azure OpenAI (key from AZURE_OPENAI_API_KEY)")
    p.add_argument("--api-version", default=None, help="Azure API version (default $OPENAI_API_VERSION)")
    p.add_argument("--concurrency", type=int, default=defaults.concurrency, help="requests in flight at most")
    p.add_argument("--rpm", type=float, default=None, help="request starts per minute at most")
    p.add_argument(
        "--cache", default=None, help="SQLite cache of finished requests (default OUT.cache.sqlite)"
    )
    p.add_argument("--max-side", type=int, default=defaults.max_side, help="image long side sent, in pixels")
    p.add_argument("--detail", choices=("high", "low", "auto"), default=defaults.image_detail)
    p.add_argument(
        "--dry-run", action="store_true", help="print request count and estimated cost; send nothing"
    )
    p.add_argument(
        "--price-input", type=float, default=defaults.price_input_per_m, help="USD per 1M input tokens"
    )
    p.add_argument(
        "--price-output", type=float, default=defaults.price_output_per_m, help="USD per 1M output tokens"
    )
    p.add_argument("--timeout", type=float, default=defaults.timeout_s, help="per-request timeout, seconds")
    p.add_argument("--max-attempts", type=int, default=defaults.max_attempts, help="tries per request")
    p.add_argument(
        "--backoff-base", type=float, default=defaults.backoff_base_s, help="first backoff, seconds"
    )
    p.add_argument(
        "--response-format", choices=("auto", "json_schema", "json_object", "none"), default="auto"
    )
    p.add_argument("--prompts", default=defaults.prompts, help="packaged prompt version or prompt directory")
    p.add_argument("--retry-unparsed", action="store_true", help="re-ask requests whose cached answer failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log retries and format fallbacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The openai/httpx loggers can print request details at INFO/DEBUG: keep them quiet.
    for name in ("openai", "httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    out = Path(args.out)
    cache_path = Path(args.cache) if args.cache else sibling_path(out, ".cache.sqlite")
    try:
        # The outputs are written when every request is done, and the cache at the first answer.
        check_creatable(out, "--out", file=True)
        check_creatable(cache_path, "--cache" if args.cache else "--out's cache")
        config = JudgeConfig(
            model=args.model,
            base_url=args.base_url,
            azure=args.azure,
            azure_api_version=args.api_version,
            concurrency=args.concurrency,
            rpm=args.rpm,
            timeout_s=args.timeout,
            max_attempts=args.max_attempts,
            backoff_base_s=args.backoff_base,
            max_side=args.max_side if args.max_side and args.max_side > 0 else None,
            image_detail=args.detail,
            prompts=args.prompts,
            response_format=args.response_format,
            retry_unparsed=args.retry_unparsed,
            price_input_per_m=args.price_input,
            price_output_per_m=args.price_output,
        )
        PromptSet.load(config.prompts)
        items = read_manifest(args.manifest)
    except (ValueError, OSError, RuntimeError, PathError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.dry_run:
        return dry_run(items, config, cache_path)

    api_key = api_key_from_env(config.azure)
    if not api_key:
        names = " or ".join(api_key_env_names(config.azure))
        print(f"error: no API key: set {names} (or use --dry-run)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(label(items, config, out, cache_path, api_key, progress=not args.no_progress))
    except JudgeFatalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"error: cache {cache_path}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; finished requests are kept in {cache_path}: rerun to resume", file=sys.stderr)
        return 130


def dry_run(items: list[EditItem], config: JudgeConfig, cache_path: Path) -> int:
    try:
        cache = AnswerCache(cache_path) if cache_path.exists() else None
    except sqlite3.Error as exc:
        print(f"error: cache {cache_path}: {exc}", file=sys.stderr)
        return 2
    try:
        plan = Judge(config, cache=cache).plan(items, "label")
    except Exception as exc:  # an unreadable image header
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    finally:
        if cache is not None:
            cache.close()
    total = plan.requests + plan.cached
    print(
        f"dry run: {plan.items} edits x 3 perspectives = {total} requests; "
        f"{plan.cached} already answered in {cache_path}, {plan.requests} to send"
    )
    print(
        f"estimated tokens: {plan.est_prompt_tokens:,} input + {plan.est_completion_tokens:,} output "
        f"(approximation, see docs/judge.md)"
    )
    print(
        f"estimated cost: ${plan.est_cost_usd:,.2f} at ${config.price_input_per_m:.2f} / "
        f"${config.price_output_per_m:.2f} per 1M input / output tokens (model {config.model})"
    )
    return 0


async def label(
    items: list[EditItem], config: JudgeConfig, out: Path, cache_path: Path, api_key: str, progress: bool
) -> int:
    started = time.monotonic()
    with AnswerCache(cache_path) as cache:
        judge = Judge(config, cache=cache, api_key=api_key)
        bar = ProgressBar(len(items), judge, enabled=progress, desc="labelling")
        try:
            results = await judge.judge_items(items, "label", on_result=bar.update)
        finally:
            bar.close()
            await judge.aclose()
    rewards = {r.id: r.reward_entry() for r in results if r.ok}
    failures = [failure_record(item, r) for item, r in zip(items, results) if not r.ok]
    failures_path = sibling_path(out, ".failures.jsonl")
    atomic_write_text(out, rewards_json(rewards))
    atomic_write_text(failures_path, "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))
    usage = judge.usage
    print(
        f"labelled {len(rewards)}/{len(items)} edits -> {out}; {len(failures)} failed -> {failures_path}\n"
        f"requests: {usage.requests_sent} sent ({usage.answers} answered, {usage.failed_requests} failed "
        f"after retries), {usage.cache_hits} from cache; tokens: {usage.prompt_tokens:,} input + "
        f"{usage.completion_tokens:,} output; cost ${judge.cost_usd:,.4f}; {time.monotonic() - started:.1f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
