"""The official Real-Edit judge protocol, read at run time from the user's clone of the official repository.

The official repository (bytedance/Multi-Reward-Editing) judges an edit with three scripts, one per
perspective (`OFFICIAL_FILES`); its `eval.py` calls them. This project ships none of their text. Instead,
`OfficialProtocol.load(repo)` parses those three files of the user's own clone with `ast` (they are never
imported or executed) and takes from the single `....chat.completions.create(...)` call in each:

- the messages: roles and order, the text of each part, where the edit instruction is inserted (an
  f-string field naming the function's instruction parameter), and which image goes where (traced from the
  image parameter: a pair unpacked as (source, edited), the order `eval.py` passes them in, or a single
  image, the edited one);
- the sampling keywords (`max_tokens` in the official files; no `temperature`, so the API default) and the
  client-side `timeout`;
- the image encoding: the `format=` and other keywords of the `.save(...)` call in the helper that
  base64-encodes the images, and the data-URL prefix.

What the files do not hold is fixed here from `eval.py`: both images of an edit are resized, before
encoding, to height `OFFICIAL_HEIGHT` (the evaluation resolution, 512 by default) and width
`int(height * W / H)` of the *original* source photo's W x H, with Pillow's default filter for RGB images
(bicubic). The model is the snapshot the official files name, `OFFICIAL_MODEL`, unless the caller chooses
another. A missing file, or one whose structure differs from what is described above, is an
`OfficialRepoError` with a one-line message naming the file.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rewardedit_jax.judge.prompts import PERSPECTIVE_IMAGES

OFFICIAL_REPOSITORY = "bytedance/Multi-Reward-Editing"
OFFICIAL_FILES: dict[str, str] = {
    "following": "gpt_eval/eval_following.py",
    "preserving": "gpt_eval/eval_keep_detail.py",
    "quality": "gpt_eval/eval_quality.py",
}
OFFICIAL_MODEL = "gpt-4o-2024-05-13"  # the snapshot all three official files request
OFFICIAL_HEIGHT = 512  # eval.py: images are resized to height --resolution (default 512) before judging

_DATA_URL_PREFIX = re.compile(r"^data:image/[\w.+-]+;base64,$")
# Keywords of the create(...) call that are not request fields: the client-side timeout.
_CLIENT_KEYWORDS = ("timeout",)


class OfficialRepoError(ValueError):
    """A file of the official repository is missing or not shaped as expected (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Text:
    """A text with the instruction's place(s): `None` parts are replaced by the instruction."""

    parts: tuple[str | None, ...]

    @property
    def uses_instruction(self) -> bool:
        return None in self.parts

    def render(self, instruction: str) -> str:
        return "".join(instruction if part is None else part for part in self.parts)

    def canonical(self) -> list:
        return [{"instruction": True} if part is None else part for part in self.parts]


@dataclasses.dataclass(frozen=True)
class ImagePart:
    """An `image_url` content part showing the source or the edited image."""

    role: str  # "source" or "edited"
    extra: tuple[tuple[str, Any], ...] = ()  # other constant keys of the image_url dict (e.g. detail)

    def canonical(self) -> dict:
        return {"image": self.role, "extra": dict(self.extra)}


@dataclasses.dataclass(frozen=True)
class Message:
    role: str
    content: Text | tuple[Text | ImagePart, ...]  # a plain string content, or a list of parts

    def canonical(self) -> dict:
        if isinstance(self.content, Text):
            return {"role": self.role, "text": self.content.canonical()}
        return {"role": self.role, "parts": [part.canonical() for part in self.content]}


@dataclasses.dataclass(frozen=True)
class OfficialRequest:
    """The request one official file sends, with the instruction and the images left open."""

    perspective: str
    file: str  # relative to the repository root
    file_sha256: str
    model: str
    messages: tuple[Message, ...]
    sampling: dict  # request fields besides model and messages, e.g. {"max_tokens": 50}
    timeout_s: float | None
    image_format: str  # the Pillow format the helper saves in, e.g. "JPEG"
    image_options: dict  # other keywords of that save call ({}: Pillow's defaults)
    url_prefix: str  # e.g. "data:image/jpeg;base64,"

    @property
    def prompt_sha256(self) -> str:
        """sha256 of the prompts as extracted (texts and layout), independent of the file's formatting."""
        blob = json.dumps([m.canonical() for m in self.messages], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def official_size(width: int, height: int, target_height: int = OFFICIAL_HEIGHT) -> tuple[int, int]:
    """The (width, height) eval.py resizes both images to: height `target_height`, the source's aspect."""
    if width < 1 or height < 1:
        raise ValueError(f"bad image size {width}x{height}")
    return max(1, int(target_height * width / height)), target_height


@dataclasses.dataclass(frozen=True)
class OfficialProtocol:
    """The three official requests; the same interface as `PromptSet` where the judge uses one."""

    repo: str
    requests: dict[str, OfficialRequest]
    version: str
    digest: str

    @classmethod
    def load(cls, repo: str | Path) -> OfficialProtocol:
        root = Path(repo).expanduser()
        if not root.is_dir():
            raise OfficialRepoError(f"{root}: no such folder (expected a clone of {OFFICIAL_REPOSITORY})")
        requests = {p: _read_request(root, p, rel) for p, rel in OFFICIAL_FILES.items()}
        first = requests["following"]
        for request in requests.values():
            for field in ("image_format", "image_options", "url_prefix"):
                if getattr(request, field) != getattr(first, field):
                    raise OfficialRepoError(
                        f"{root / request.file}: encodes images differently from {root / first.file} "
                        f"({field})"
                    )
        canonical = {
            p: {
                "messages": [m.canonical() for m in r.messages],
                "model": r.model,
                "sampling": r.sampling,
                "image": [r.image_format, r.image_options, r.url_prefix],
            }
            for p, r in requests.items()
        }
        blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode("utf-8")
        digest = hashlib.sha256(blob).hexdigest()
        return cls(str(root.resolve()), requests, f"official-{digest[:12]}", digest)

    # --- what the judge needs ----------------------------------------------------------------------------

    @property
    def image_format(self) -> str:
        return self.requests["following"].image_format

    @property
    def image_options(self) -> dict:
        return self.requests["following"].image_options

    @property
    def url_prefix(self) -> str:
        return self.requests["following"].url_prefix

    @property
    def timeout_s(self) -> float | None:
        timeouts = [r.timeout_s for r in self.requests.values() if r.timeout_s is not None]
        return max(timeouts) if timeouts else None

    def sampling(self, perspective: str) -> dict:
        return dict(self.requests[perspective].sampling)

    def uses_instruction(self, mode: str, perspective: str) -> bool:
        _check_eval(mode)
        return any(text.uses_instruction for text in self._texts(perspective))

    def render(self, mode: str, perspective: str, instruction: str) -> str:
        """All user-side text of the request (for cost estimates)."""
        _check_eval(mode)
        return "\n".join(text.render(instruction) for text in self._texts(perspective, roles=("user",)))

    def system_text(self, mode: str, perspective: str) -> str:
        _check_eval(mode)
        return "\n".join(text.render("") for text in self._texts(perspective, roles=("system",)))

    def messages(
        self, mode: str, perspective: str, instruction: str, image_urls: list[str], detail: str | None = None
    ) -> list[dict]:
        """The messages exactly as the official file builds them; `image_urls` in PERSPECTIVE_IMAGES order.

        `detail` is ignored: the official files send no image detail (the API default).
        """
        _check_eval(mode)
        urls = dict(zip(PERSPECTIVE_IMAGES[perspective], image_urls, strict=True))
        out = []
        for message in self.requests[perspective].messages:
            if isinstance(message.content, Text):
                content: str | list = message.content.render(instruction)
            else:
                content = []
                for part in message.content:
                    if isinstance(part, Text):
                        content.append({"type": "text", "text": part.render(instruction)})
                    else:
                        content.append(
                            {"type": "image_url", "image_url": {"url": urls[part.role], **dict(part.extra)}}
                        )
            out.append({"role": message.role, "content": content})
        return out

    def response_format(self, mode: str, kind: str) -> None:
        """The official requests ask for no response format."""
        return None

    def metadata(self) -> dict:
        """What results.json records: where the prompts came from and their hashes (never their text)."""
        return {
            "source": self.repo,
            "version": self.version,
            "files": {p: r.file for p, r in self.requests.items()},
            "file_sha256": {p: r.file_sha256 for p, r in self.requests.items()},
            "prompt_sha256": {p: r.prompt_sha256 for p, r in self.requests.items()},
            "model_in_files": sorted({r.model for r in self.requests.values()}),
            "sampling": {p: r.sampling for p, r in self.requests.items()},
            "timeout_s": self.timeout_s,
            "images": {
                "format": self.image_format,
                "save_options": self.image_options,
                "resize": f"height {OFFICIAL_HEIGHT} (the evaluation resolution), the source photo's aspect",
            },
        }

    def _texts(self, perspective: str, roles: tuple[str, ...] | None = None):
        for message in self.requests[perspective].messages:
            if roles is not None and message.role not in roles:
                continue
            parts = (message.content,) if isinstance(message.content, Text) else message.content
            yield from (part for part in parts if isinstance(part, Text))


def _check_eval(mode: str) -> None:
    if mode != "eval":
        raise ValueError(f"the official protocol has eval prompts only, not {mode!r}")


# --- reading one file --------------------------------------------------------------------------------------


class _FileReader:
    """Extracts an `OfficialRequest` from one file's syntax tree; every failure names the file."""

    def __init__(self, root: Path, perspective: str, rel: str):
        self.path = root / rel
        self.perspective = perspective
        self.rel = rel
        self._url_prefix: str | None = None

    def fail(self, problem: str, node: ast.AST | None = None) -> OfficialRepoError:
        where = f":{node.lineno}" if node is not None and hasattr(node, "lineno") else ""
        return OfficialRepoError(
            f"{self.path}{where}: {problem} (expected the structure of {OFFICIAL_REPOSITORY}'s {self.rel})"
        )

    def read(self) -> OfficialRequest:
        if not self.path.is_file():
            raise OfficialRepoError(
                f"{self.path}: missing (is the folder a clone of {OFFICIAL_REPOSITORY}? it needs {self.rel})"
            )
        try:
            data = self.path.read_bytes()
            source = data.decode("utf-8")
            tree = ast.parse(source, filename=str(self.path))
        except (OSError, UnicodeDecodeError) as exc:
            raise OfficialRepoError(f"{self.path}: cannot read ({type(exc).__name__}: {exc})") from None
        except SyntaxError as exc:
            raise OfficialRepoError(f"{self.path}:{exc.lineno}: not valid Python ({exc.msg})") from None
        calls = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and _dotted(node.func).endswith("chat.completions.create")
        ]
        if len(calls) != 1:
            raise self.fail(f"expected one chat.completions.create(...) call, found {len(calls)}")
        call = calls[0]
        function = self._enclosing_function(tree, call)
        keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
        if call.args or any(k.arg is None for k in call.keywords):
            raise self.fail("create(...) takes positional or ** arguments", call)
        for name in ("model", "messages"):
            if name not in keywords:
                raise self.fail(f"create(...) has no {name}= argument", call)
        model = keywords["model"]
        if not (isinstance(model, ast.Constant) and isinstance(model.value, str) and model.value):
            raise self.fail("model= is not a string constant", model)
        params = [a.arg for a in function.args.posonlyargs + function.args.args]
        if not params:
            raise self.fail(f"{function.name}() takes no image argument", function)
        image_param = params[0]
        instruction_param = params[1] if len(params) > 1 else None
        encoded = self._encoded_images(function, image_param)
        messages, roles, helpers = self._messages(keywords["messages"], encoded, instruction_param)
        expected = set(PERSPECTIVE_IMAGES[self.perspective])
        if set(roles) != expected or len(roles) != len(expected):
            raise self.fail(
                f"the request shows the images {', '.join(roles) or 'none'}; expected one each of "
                f"{', '.join(sorted(expected))}",
                keywords["messages"],
            )
        if self.perspective != "quality" and not any(part.uses_instruction for part in _all_texts(messages)):
            problem = f"no prompt text inserts the instruction ({instruction_param})"
            raise self.fail(problem, keywords["messages"])
        sampling, timeout = {}, None
        for name, node in keywords.items():
            if name in ("model", "messages"):
                continue
            try:
                value = ast.literal_eval(node)
            except ValueError:
                raise self.fail(f"{name}= is not a constant", node) from None
            if name in _CLIENT_KEYWORDS:
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                    raise self.fail(f"{name}= is not a positive number", node)
                timeout = float(value)
            else:
                sampling[name] = value
        if len(helpers) != 1:
            raise self.fail("the images are encoded by more than one helper", keywords["messages"])
        image_format, image_options = self._save_call(tree, helpers.pop())
        return OfficialRequest(
            perspective=self.perspective,
            file=self.rel,
            file_sha256=hashlib.sha256(data).hexdigest(),
            model=model.value,
            messages=messages,
            sampling=sampling,
            timeout_s=timeout,
            image_format=image_format,
            image_options=image_options,
            url_prefix=self._url_prefix,
        )

    def _enclosing_function(self, tree: ast.Module, call: ast.Call) -> ast.FunctionDef:
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                inner is call for inner in ast.walk(node)
            ):
                return node
        raise self.fail("the create(...) call is not inside a top-level function", call)

    def _encoded_images(self, function: ast.FunctionDef, image_param: str) -> dict[str, tuple[str, str]]:
        """Variable -> (role, helper) for each `var = helper(image)` of the function's image argument."""
        unpacked: dict[str, int] = {}
        for node in _assignments(function, ast.Tuple, ast.Name):
            if node.value.id == image_param:
                names = node.targets[0].elts
                if len(names) != 2 or not all(isinstance(n, ast.Name) for n in names):
                    raise self.fail(f"{image_param} is not unpacked into two names", node)
                unpacked.update({n.id: i for i, n in enumerate(names)})
        encoded = {}
        for node in _assignments(function, ast.Name, ast.Call):
            if (
                isinstance(node.value.func, ast.Name)
                and len(node.value.args) == 1
                and isinstance(node.value.args[0], ast.Name)
            ):
                argument = node.value.args[0].id
                if argument in unpacked:
                    role = ("source", "edited")[unpacked[argument]]
                elif argument == image_param and not unpacked:
                    role = "edited"  # eval.py passes the edited image alone to the quality judge
                else:
                    continue
                encoded[node.targets[0].id] = (role, node.value.func.id)
        return encoded

    def _messages(self, node: ast.AST, encoded: dict, instruction_param: str | None):
        if not isinstance(node, ast.List):
            raise self.fail("messages= is not a literal list", node)
        messages, roles, helpers = [], [], set()
        for element in node.elts:
            fields = self._dict(element, "a message")
            role = fields.get("role")
            if not (isinstance(role, ast.Constant) and isinstance(role.value, str)):
                raise self.fail("a message has no constant role", element)
            if "content" not in fields:
                raise self.fail("a message has no content", element)
            content = fields["content"]
            if isinstance(content, ast.List):
                parts = []
                for item in content.elts:
                    part_fields = self._dict(item, "a content part")
                    kind = part_fields.get("type")
                    kind = kind.value if isinstance(kind, ast.Constant) else None
                    if kind == "text" and "text" in part_fields:
                        parts.append(self._text(part_fields["text"], instruction_param))
                    elif kind == "image_url" and "image_url" in part_fields:
                        image_role, helper, extra = self._image(part_fields["image_url"], encoded)
                        parts.append(ImagePart(image_role, extra))
                        roles.append(image_role)
                        helpers.add(helper)
                    else:
                        raise self.fail("a content part is neither text nor image_url", item)
                messages.append(Message(role.value, tuple(parts)))
            else:
                messages.append(Message(role.value, self._text(content, instruction_param)))
        if not messages:
            raise self.fail("messages= is empty", node)
        if self._url_prefix is None:
            self._url_prefix = "data:image/jpeg;base64,"  # no image: unused
        return tuple(messages), roles, helpers

    def _dict(self, node: ast.AST, what: str) -> dict[str, ast.AST]:
        if not isinstance(node, ast.Dict) or not all(
            isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys
        ):
            raise self.fail(f"{what} is not a literal dict with string keys", node)
        return {k.value: v for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[union-attr]

    def _text(self, node: ast.AST, instruction_param: str | None) -> Text:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return Text((node.value,))
        if not isinstance(node, ast.JoinedStr):
            raise self.fail("a prompt text is not a string literal or f-string", node)
        parts: list[str | None] = []
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(value.value)
            elif (
                isinstance(value, ast.FormattedValue)
                and isinstance(value.value, ast.Name)
                and value.value.id == instruction_param
                and value.conversion == -1
                and value.format_spec is None
            ):
                parts.append(None)
            else:
                raise self.fail(
                    f"a prompt f-string inserts something other than the instruction ({instruction_param})",
                    value,
                )
        return Text(tuple(parts))

    def _image(self, node: ast.AST, encoded: dict):
        fields = self._dict(node, "an image_url")
        url = fields.get("url")
        if not (
            isinstance(url, ast.JoinedStr)
            and len(url.values) == 2
            and isinstance(url.values[0], ast.Constant)
            and isinstance(url.values[1], ast.FormattedValue)
            and isinstance(url.values[1].value, ast.Name)
        ):
            raise self.fail('an image url is not f"data:...;base64,{encoded image}"', node)
        prefix = url.values[0].value
        if not _DATA_URL_PREFIX.match(prefix):
            raise self.fail(f"an image url does not start like data:image/...;base64, ({prefix[:40]!r})", url)
        if self._url_prefix is not None and prefix != self._url_prefix:
            raise self.fail("the image urls have different prefixes", url)
        self._url_prefix = prefix
        name = url.values[1].value.id
        if name not in encoded:
            raise self.fail(f"cannot tell which image {name} holds (source or edited)", url)
        extra = []
        for key, value in fields.items():
            if key == "url":
                continue
            try:
                extra.append((key, ast.literal_eval(value)))
            except ValueError:
                raise self.fail(f"image_url {key} is not a constant", value) from None
        role, helper = encoded[name]
        return role, helper, tuple(extra)

    def _save_call(self, tree: ast.Module, helper: str) -> tuple[str, dict]:
        functions = [
            node
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == helper
        ]
        if len(functions) != 1:
            raise self.fail(f"the image helper {helper}() is not defined once at top level")
        saves = [
            node
            for node in ast.walk(functions[0])
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "save"
        ]
        if len(saves) != 1:
            raise self.fail(f"{helper}() does not save the image exactly once", functions[0])
        options = {}
        for keyword in saves[0].keywords:
            if keyword.arg is None:
                raise self.fail(f"{helper}() saves with ** arguments", saves[0])
            try:
                options[keyword.arg] = ast.literal_eval(keyword.value)
            except ValueError:
                problem = f"{helper}() saves with a non-constant {keyword.arg}="
                raise self.fail(problem, keyword.value) from None
        image_format = options.pop("format", None)
        if not isinstance(image_format, str):
            raise self.fail(f"{helper}() does not save with a constant format=", saves[0])
        return image_format.upper(), options


def _read_request(root: Path, perspective: str, rel: str) -> OfficialRequest:
    return _FileReader(root, perspective, rel).read()


def _all_texts(messages: tuple[Message, ...]):
    for message in messages:
        parts = (message.content,) if isinstance(message.content, Text) else message.content
        yield from (part for part in parts if isinstance(part, Text))


def _assignments(function: ast.AST, target_type: type, value_type: type) -> Iterator[ast.Assign]:
    """The ``target = value`` statements in ``function`` with one target of ``target_type`` and a value of
    ``value_type``."""
    for node in ast.walk(function):
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], target_type)
            and isinstance(node.value, value_type)
        ):
            yield node


def _dotted(node: ast.AST) -> str:
    """`a.b.c` of an attribute chain ("" when it is not one)."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
    elif isinstance(node, ast.Call):
        names.append(_dotted(node.func) + "()")
    return ".".join(reversed(names))
