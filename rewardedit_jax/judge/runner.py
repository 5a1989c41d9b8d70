"""The judge: one request per (edit, perspective), cached, parsed, and gathered into per-edit results.

`Judge` runs inside an asyncio loop. For each edit it hashes the images, serves finished requests from the
cache, encodes the images once for the rest, and sends the remaining perspectives concurrently through the
transport (which enforces the concurrency, rate and retry policy). Every answer is committed to the cache the
moment it arrives; parse failures are recorded with the raw answer. An edit is complete only when all three
perspectives parsed; otherwise its `ItemResult` says which failed and why. Nothing is dropped.

Public entry points (also re-exported by `rewardedit_jax.judge`):
- `evaluate_edits(items, config)` / `evaluate_edits_async`: eval mode (Real-Edit protocol) -> `EvalReport`;
- `label_edits(items, config)` / `label_edits_async`: label mode (RewardEdit-style rewards) -> `LabelReport`;
- `Judge.plan(items, mode)`: request count and cost estimate without sending anything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from rewardedit_jax.judge import cost as cost_lib
from rewardedit_jax.judge import images as image_lib
from rewardedit_jax.judge.cache import AnswerCache, CachedAnswer, RequestIdentity
from rewardedit_jax.judge.client import (
    ChatTransport,
    JudgeFatalError,
    Redactor,
    RequestFailed,
    api_key_env_names,
    api_key_from_env,
    make_client,
)
from rewardedit_jax.judge.config import MODES, PERSPECTIVES, JudgeConfig
from rewardedit_jax.judge.official import OfficialProtocol, official_size
from rewardedit_jax.judge.parse import EvalAnswer, ParseError, parse_answer
from rewardedit_jax.judge.prompts import PACKAGED_DIGESTS, PERSPECTIVE_IMAGES, PromptSet

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EditItem:
    """One edit to judge. `source` and `edited` are file paths or PIL images.

    `sent_size` (official protocol only): the (width, height) both images are resized to before sending;
    None: height 512 at the source image's aspect ratio. The evaluator passes the size computed from the
    original photo, as the official eval.py does.
    """

    id: str
    source: image_lib.ImageInput
    edited: image_lib.ImageInput
    instruction: str
    sent_size: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class Judgment:
    """The judge's verdict on one perspective of one edit (or why there is none)."""

    perspective: str
    score: float | None = None
    answer: str | None = None  # eval mode: "yes" / "no"
    feedback: str | None = None  # label mode: failure points, "None" when there are none
    failure: str | None = None  # why there is no verdict (None when ok)
    raw: str | None = None  # the model's answer text, when there was one
    cached: bool = False  # served from the cache (cost nothing in this run)

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclasses.dataclass(frozen=True)
class ItemResult:
    id: str
    mode: str
    judgments: dict[str, Judgment]  # perspective -> judgment, in PERSPECTIVES order

    @property
    def ok(self) -> bool:
        return all(j.ok for j in self.judgments.values())

    @property
    def failures(self) -> dict[str, str]:
        return {p: j.failure for p, j in self.judgments.items() if j.failure is not None}

    def reward_entry(self) -> list[dict]:
        """The RewardEdit_20K.json value of a fully labelled edit: 3 x {"Score", "Negative Prompt"}."""
        if self.mode != "label" or not self.ok:
            raise ValueError(f"item {self.id!r} is not a complete label result")
        return [
            {"Score": _plain_number(self.judgments[p].score), "Negative Prompt": self.judgments[p].feedback}
            for p in PERSPECTIVES
        ]


@dataclasses.dataclass
class LabelReport:
    items: list[ItemResult]
    usage: cost_lib.Usage
    cost_usd: float

    @property
    def rewards(self) -> dict[str, list[dict]]:
        """id -> reward entry, for fully labelled edits only, in input order."""
        return {r.id: r.reward_entry() for r in self.items if r.ok}

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.items if not r.ok]


@dataclasses.dataclass
class EvalReport:
    """Per-edit eval results and the Real-Edit aggregates.

    `<perspective>_yes` is the fraction of "yes" and `<perspective>_score` the mean score, each over the edits
    whose judgment for that perspective succeeded (`<perspective>_n` of them; None when there are none).
    `failed` counts edits with at least one failed perspective; they are listed in `items` with reasons.
    """

    items: list[ItemResult]
    usage: cost_lib.Usage
    cost_usd: float
    n: int = dataclasses.field(init=False, default=0)
    failed: int = dataclasses.field(init=False, default=0)
    following_yes: float | None = dataclasses.field(init=False, default=None)
    following_score: float | None = dataclasses.field(init=False, default=None)
    following_n: int = dataclasses.field(init=False, default=0)
    preserving_yes: float | None = dataclasses.field(init=False, default=None)
    preserving_score: float | None = dataclasses.field(init=False, default=None)
    preserving_n: int = dataclasses.field(init=False, default=0)
    quality_yes: float | None = dataclasses.field(init=False, default=None)
    quality_score: float | None = dataclasses.field(init=False, default=None)
    quality_n: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        self.n = len(self.items)
        self.failed = sum(not r.ok for r in self.items)
        for perspective in PERSPECTIVES:
            judged = [r.judgments[perspective] for r in self.items if r.judgments[perspective].ok]
            setattr(self, f"{perspective}_n", len(judged))
            if judged:
                setattr(self, f"{perspective}_yes", sum(j.answer == "yes" for j in judged) / len(judged))
                setattr(self, f"{perspective}_score", sum(j.score for j in judged) / len(judged))

    def aggregates(self) -> dict:
        keys = ["n", "failed"] + [f"{p}_{k}" for p in PERSPECTIVES for k in ("yes", "score", "n")]
        return {key: getattr(self, key) for key in keys} | {"cost_usd": self.cost_usd}


@dataclasses.dataclass
class Plan:
    """What a run would do: requests to send, answers already cached, and the estimated cost."""

    items: int
    requests: int
    cached: int
    est_prompt_tokens: int
    est_completion_tokens: int
    est_cost_usd: float


class Judge:
    """Judges edits against one endpoint and model. Use inside one event loop; `await aclose()` at the end.

    `cache` (or `config.cache_path`) makes finished requests persistent. The API key comes from the
    environment unless given; it is needed only when a request must actually be sent.
    """

    def __init__(self, config: JudgeConfig, *, cache: AnswerCache | None = None, api_key: str | None = None):
        self.official: OfficialProtocol | None = None
        if config.protocol == "official":
            # The official requests send no temperature and no response format; their timeout is kept.
            self.official = OfficialProtocol.load(config.official_repo)
            config = config.replace(
                response_format="none",
                temperature=None,
                max_side=None,
                timeout_s=self.official.timeout_s or config.timeout_s,
            )
            self.prompts: PromptSet | OfficialProtocol = self.official
        else:
            self.prompts = PromptSet.load(config.prompts)
        self.config = config
        self._owns_cache = cache is None and config.cache_path is not None
        self.cache = (
            cache if cache is not None else (AnswerCache(config.cache_path) if self._owns_cache else None)
        )
        self._api_key = api_key
        self.usage = cost_lib.Usage()
        self._transport: ChatTransport | None = None
        self._hash_memo: dict[tuple, str] = {}
        self._formats = {
            mode: {
                kind: self.prompts.response_format(mode, kind)
                for kind in ("json_schema", "json_object", "none")
            }
            for mode in MODES
        }

    @property
    def cost_usd(self) -> float:
        return self.usage.cost(self.config.price_input_per_m, self.config.price_output_per_m)

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.client.close()
            self._transport = None
        if self._owns_cache and self.cache is not None:
            self.cache.close()
            self.cache = None

    # --- judging -------------------------------------------------------------------------------------

    async def judge_items(
        self, items: Sequence[EditItem], mode: str, on_result: Callable[[ItemResult], None] | None = None
    ) -> list[ItemResult]:
        """Results in input order. `on_result` is called as each edit completes (progress bars)."""
        _check_mode(mode)
        results: list[ItemResult | None] = [None] * len(items)
        indices = iter(range(len(items)))

        async def worker() -> None:
            for index in indices:
                results[index] = await self.judge_item(items[index], mode)
                if on_result is not None:
                    on_result(results[index])

        # Twice as many edits in progress as request slots keeps the slots busy during image encoding.
        workers = [
            asyncio.ensure_future(worker()) for _ in range(min(len(items), 2 * self.config.concurrency))
        ]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        return results  # type: ignore[return-value]

    async def judge_item(self, item: EditItem, mode: str) -> ItemResult:
        _check_mode(mode)
        try:
            identities = await asyncio.to_thread(self._identities, item, mode)
        except Exception as exc:  # missing or unreadable file: this edit fails, the run goes on
            return self._all_failed(item, mode, f"cannot read image: {_one_line(exc)}")
        judgments: dict[str, Judgment] = {}
        for perspective, identity in identities.items():
            cached = self.cache.get(identity.key) if self.cache is not None else None
            if cached is not None:
                judgment = self._judgment(perspective, mode, cached.answer, cached=True)
                if judgment.ok or not self.config.retry_unparsed:
                    self.usage.cache_hits += 1
                    judgments[perspective] = judgment
        pending = [p for p in PERSPECTIVES if p not in judgments]
        if pending:
            needed = sorted({role for p in pending for role in PERSPECTIVE_IMAGES[p]})
            try:
                urls = await asyncio.to_thread(self._data_urls, item, needed)
            except Exception as exc:  # not an image, truncated, a decompression bomb, ...
                urls = None
                for perspective in pending:
                    judgments[perspective] = Judgment(
                        perspective, failure=f"cannot read image: {_one_line(exc)}"
                    )
            if urls is not None:
                sent = await asyncio.gather(
                    *(self._request(item, mode, p, identities[p], urls) for p in pending)
                )
                judgments.update(zip(pending, sent))
        return ItemResult(item.id, mode, {p: judgments[p] for p in PERSPECTIVES})

    async def _request(
        self, item: EditItem, mode: str, perspective: str, identity: RequestIdentity, urls: dict[str, str]
    ) -> Judgment:
        messages = self.prompts.messages(
            mode,
            perspective,
            item.instruction,
            [urls[role] for role in PERSPECTIVE_IMAGES[perspective]],
            self.config.image_detail,
        )
        transport = self._get_transport()
        try:
            sampling = self.official.sampling(perspective) if self.official is not None else None
            completion = await transport.complete(messages, self._formats[mode], sampling)
        except RequestFailed as exc:
            return Judgment(perspective, failure=exc.reason)
        except (JudgeFatalError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug or an unforeseen reply must not take the whole run down
            log.warning("unexpected error judging %s/%s: %s", item.id, perspective, type(exc).__name__)
            return Judgment(perspective, failure=transport.redact(f"unexpected error: {_one_line(exc)}"))
        if self.cache is not None:
            self.cache.put(
                identity,
                CachedAnswer(
                    completion.text,
                    completion.finish_reason,
                    completion.prompt_tokens,
                    completion.completion_tokens,
                ),
            )
        judgment = self._judgment(perspective, mode, completion.text, cached=False)
        if not judgment.ok and completion.finish_reason not in (None, "stop"):
            judgment = dataclasses.replace(
                judgment, failure=f"{judgment.failure} (finish_reason={completion.finish_reason})"
            )
        return judgment

    def _judgment(self, perspective: str, mode: str, text: str, cached: bool) -> Judgment:
        try:
            parsed = parse_answer(text, mode)
        except ParseError as exc:
            return Judgment(perspective, failure=f"unparseable answer: {exc}", raw=text, cached=cached)
        if isinstance(parsed, EvalAnswer):
            return Judgment(perspective, score=parsed.score, answer=parsed.answer, raw=text, cached=cached)
        return Judgment(perspective, score=parsed.score, feedback=parsed.feedback, raw=text, cached=cached)

    def _all_failed(self, item: EditItem, mode: str, reason: str) -> ItemResult:
        return ItemResult(item.id, mode, {p: Judgment(p, failure=reason) for p in PERSPECTIVES})

    def _get_transport(self) -> ChatTransport:
        if self._transport is None:
            key = self._api_key or api_key_from_env(self.config.azure)
            if not key:
                names = " or ".join(api_key_env_names(self.config.azure))
                raise JudgeFatalError(f"no API key: set {names}")
            client = make_client(self.config, key)
            self._transport = ChatTransport(self.config, client, Redactor([key]), self.usage)
        return self._transport

    # --- identities, images, planning ----------------------------------------------------------------

    def _image_hash(self, image: image_lib.ImageInput) -> str:
        if isinstance(image, (str, os.PathLike)):
            stat = os.stat(image)
            memo_key = (os.path.realpath(image), stat.st_size, stat.st_mtime_ns)
            if memo_key not in self._hash_memo:
                self._hash_memo[memo_key] = image_lib.content_hash(image)
            return self._hash_memo[memo_key]
        return image_lib.content_hash(image)

    def _identities(self, item: EditItem, mode: str) -> dict[str, RequestIdentity]:
        hashes = {"source": self._image_hash(item.source), "edited": self._image_hash(item.edited)}
        sent_size = self._official_size(item) if self.official is not None else None
        out = {}
        for perspective in PERSPECTIVES:
            uses_instruction = self.prompts.uses_instruction(mode, perspective)
            # The official scripts insert the instruction verbatim; the project's prompts collapse spaces.
            instruction = item.instruction
            if self.official is None:
                instruction = " ".join(instruction.split())
            out[perspective] = RequestIdentity(
                model=self.config.model,
                prompt_version=self.prompts.version,
                mode=mode,
                perspective=perspective,
                image_hashes=tuple(hashes[role] for role in PERSPECTIVE_IMAGES[perspective]),
                instruction=instruction if uses_instruction else None,
                max_side=self.config.max_side,
                detail="unset" if self.official is not None else self.config.image_detail,
                sent_size=sent_size,
            )
        return out

    def _official_size(self, item: EditItem) -> tuple[int, int]:
        if item.sent_size is not None:
            return (int(item.sent_size[0]), int(item.sent_size[1]))
        return official_size(*image_lib.upright_size(item.source))

    def _data_urls(self, item: EditItem, roles: list[str]) -> dict[str, str]:
        if self.official is not None:
            size, protocol = self._official_size(item), self.official
            return {
                role: protocol.url_prefix
                + image_lib.resized_base64(
                    getattr(item, role), size, protocol.image_format, protocol.image_options
                )
                for role in roles
            }
        return {role: image_lib.to_data_url(getattr(item, role), self.config.max_side) for role in roles}

    def plan(self, items: Sequence[EditItem], mode: str) -> Plan:
        """Count the requests a run would send (cached ones excluded), estimate their cost; send nothing."""
        _check_mode(mode)
        requests = cached = prompt_tokens = 0
        size_memo: dict = {}
        for item in items:
            identities = self._identities(item, mode)
            for perspective, identity in identities.items():
                hit = self.cache.get(identity.key) if self.cache is not None else None
                if hit is not None:
                    usable = self._judgment(perspective, mode, hit.answer, cached=True).ok
                    if usable or not self.config.retry_unparsed:
                        cached += 1
                        continue
                requests += 1
                sizes = []
                for role in PERSPECTIVE_IMAGES[perspective]:
                    if identity.sent_size is not None:
                        sizes.append(identity.sent_size)
                        continue
                    image = getattr(item, role)
                    memo_key = os.fspath(image) if isinstance(image, (str, os.PathLike)) else id(image)
                    if memo_key not in size_memo:
                        size_memo[memo_key] = image_lib.sent_size(image, self.config.max_side)
                    sizes.append(size_memo[memo_key])
                text = self.prompts.render(mode, perspective, item.instruction)
                # The official requests send no image detail: the API default, auto, estimated as high.
                detail = "high" if self.official is not None else self.config.image_detail
                prompt_tokens += cost_lib.request_tokens(
                    self.prompts.system_text(mode, perspective), text, sizes, detail
                )
        completion_tokens = requests * cost_lib.ESTIMATED_OUTPUT_TOKENS[mode]
        estimate = cost_lib.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return Plan(
            items=len(items),
            requests=requests,
            cached=cached,
            est_prompt_tokens=prompt_tokens,
            est_completion_tokens=completion_tokens,
            est_cost_usd=estimate.cost(self.config.price_input_per_m, self.config.price_output_per_m),
        )


# --- convenience API ---------------------------------------------------------------------------------


def protocol_metadata(config: JudgeConfig) -> dict:
    """What a results file records about the judge's protocol: where the prompts come from, their version
    and SHA-256 hashes (never their text), and the sampling and image settings of the requests.

    Loads the prompts, so a missing or changed official file raises `OfficialRepoError` (a one-line
    message naming the file).
    """
    if config.protocol == "official":
        return OfficialProtocol.load(config.official_repo).metadata()
    prompts = PromptSet.load(config.prompts)
    source = config.prompts
    if config.prompts in PACKAGED_DIGESTS:
        source = f"rewardedit_jax/judge/prompts/{config.prompts}"
    return {
        "source": source,
        "version": prompts.version,
        "prompt_sha256": {p: prompts.prompt_sha256("eval", p) for p in PERSPECTIVES},
        "sampling": {
            "temperature": config.temperature,
            "max_completion_tokens": config.max_output_tokens,
            "response_format": config.response_format,
        },
        "images": {"max_side": config.max_side, "detail": config.image_detail},
    }


def as_edit_items(items: Iterable[EditItem | Mapping]) -> list[EditItem]:
    """EditItems from EditItems or mappings with source, edited, instruction and optionally id."""
    out = []
    for index, item in enumerate(items):
        if isinstance(item, EditItem):
            out.append(item)
            continue
        missing = [k for k in ("source", "edited", "instruction") if k not in item]
        if missing:
            raise ValueError(f"item {index} lacks {', '.join(missing)}")
        sent_size = tuple(item["sent_size"]) if item.get("sent_size") is not None else None
        out.append(
            EditItem(
                str(item.get("id", index)),
                item["source"],
                item["edited"],
                str(item["instruction"]),
                sent_size,  # type: ignore[arg-type]
            )
        )
    return out


async def evaluate_edits_async(
    items: Iterable[EditItem | Mapping],
    config: JudgeConfig | None = None,
    *,
    progress: bool = False,
    api_key: str | None = None,
) -> EvalReport:
    """Score edits in eval mode (yes/no + 0..5 per perspective, Real-Edit protocol)."""
    config = config or JudgeConfig()
    results, judge = await _run(as_edit_items(items), "eval", config, progress, api_key)
    return EvalReport(results, judge.usage, judge.cost_usd)


async def label_edits_async(
    items: Iterable[EditItem | Mapping],
    config: JudgeConfig | None = None,
    *,
    progress: bool = False,
    api_key: str | None = None,
) -> LabelReport:
    """Label edits with RewardEdit-style rewards (score 0..5 + failure points per perspective)."""
    config = config or JudgeConfig()
    results, judge = await _run(as_edit_items(items), "label", config, progress, api_key)
    return LabelReport(results, judge.usage, judge.cost_usd)


def evaluate_edits(
    items: Iterable[EditItem | Mapping],
    config: JudgeConfig | None = None,
    *,
    progress: bool = False,
    api_key: str | None = None,
) -> EvalReport:
    """Synchronous `evaluate_edits_async` (works inside a running event loop too, e.g. in Jupyter)."""
    return run_sync(evaluate_edits_async(items, config, progress=progress, api_key=api_key))


def label_edits(
    items: Iterable[EditItem | Mapping],
    config: JudgeConfig | None = None,
    *,
    progress: bool = False,
    api_key: str | None = None,
) -> LabelReport:
    """Synchronous `label_edits_async`."""
    return run_sync(label_edits_async(items, config, progress=progress, api_key=api_key))


def run_sync(coroutine):
    """Run a coroutine to completion from synchronous code, also when this thread has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _run(items: list[EditItem], mode: str, config: JudgeConfig, progress: bool, api_key: str | None):
    judge = Judge(config, api_key=api_key)
    bar = ProgressBar(len(items), judge, enabled=progress)
    try:
        results = await judge.judge_items(items, mode, on_result=bar.update)
    finally:
        bar.close()
        await judge.aclose()
    return results, judge


class ProgressBar:
    """tqdm bar over edits with done / failed / cost in the postfix."""

    def __init__(self, total: int, judge: Judge, enabled: bool = True, desc: str = "judging"):
        self.judge = judge
        self.done = self.failed = 0
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="edit", desc=desc, dynamic_ncols=True, mininterval=0.5)

    def update(self, result: ItemResult) -> None:
        if result.ok:
            self.done += 1
        else:
            self.failed += 1
        if self._bar is not None:
            postfix = {"done": self.done, "failed": self.failed, "cost": f"${self.judge.cost_usd:.4f}"}
            self._bar.set_postfix(ordered_dict=postfix, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _plain_number(value: float | None):
    return int(value) if value is not None and float(value).is_integer() else value


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())
