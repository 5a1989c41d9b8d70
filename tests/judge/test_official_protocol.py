"""`--judge-protocol official`: the official repository's judge requests, read from a clone at run time.

The tests write a fake official repository laid out like bytedance/Multi-Reward-Editing: `gpt_eval/*.py`
with the same Python structure as the real files (a base64 helper that saves JPEG, a function that unpacks
(source, edited), builds the messages inline and calls `chat.completions.create` with the model, the messages,
`max_tokens` and a client timeout) but made-up prompt texts. The requests the official scripts would send are
obtained by running those fake scripts with a recording stand-in for the `openai` package; the project's
requests, sent to the local chat server, must equal them byte for byte (model, messages, the base64 JPEG
images, sampling fields).
"""

import base64
import hashlib
import importlib.util
import io
import json
import re
import shutil
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
from judge.chat_server import FAKE_KEY, Reply
from PIL import Image

from rewardedit_jax import evaluate as ev
from rewardedit_jax.judge import EditItem, JudgeConfig, evaluate_edits, protocol_metadata
from rewardedit_jax.judge.official import OFFICIAL_FILES, OfficialProtocol, OfficialRepoError
from rewardedit_jax.judge.parse import parse_eval_answer

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

FAST_COMPILE = {"xla_backend_optimization_level": 0}
ANSWER_KEYS = {"following": "following", "preserving": "consistent", "quality": "clear"}
# Made-up prompt texts (the real ones are never part of this project); `{prompt}` marks the f-string field.
FAKE_PROMPTS = {
    "following": ("Zebra-system text one. ", "Check edit A.\nEdit text: {prompt}\nReply with a dict.\n"),
    "preserving": ("Zebra-system text two. ", "Check edit B.\nEdit text: {prompt}\nReply with a dict.\n"),
    "quality": ("Zebra-system text three. ", "Check picture C.\nReply with a dict.\n"),
}


def official_source(perspective: str, *, edited_first: bool = False, create_extra: str = "") -> str:
    """A gpt_eval file with the official files' structure and made-up prompts."""
    system, user = FAKE_PROMPTS[perspective]
    user_literal = "\n".join(
        f"                    {'f' if '{prompt}' in line else ''}{json.dumps(line + chr(10))}"
        for line in user.rstrip("\n").split("\n")
    )
    if perspective == "quality":
        signature, unpack, encode = "edited_img", "", "    edited_b64 = read_base64_img(edited_img)\n"
        images = ['f"data:image/jpeg;base64,{edited_b64}"']
    else:
        signature, unpack = "image_pair, prompt", "    orig_img, edited_img = image_pair\n"
        encode = "    orig_b64 = read_base64_img(orig_img)\n    edited_b64 = read_base64_img(edited_img)\n"
        images = ['f"data:image/jpeg;base64,{orig_b64}"', 'f"data:image/jpeg;base64,{edited_b64}"']
        if edited_first:
            images.reverse()
    image_parts = "".join(
        f'                {{"type": "image_url", "image_url": {{"url": {url}}}}},\n' for url in images
    )
    return (
        textwrap.dedent(
            """\
            # A stand-in for the official judge script (made-up prompts, same structure).
            import base64
            import io

            import openai
            from PIL import Image


            def read_base64_img(img):
                buf = io.BytesIO()
                if isinstance(img, str):
                    img = Image.open(img)
                img.save(buf, format='JPEG')
                return base64.b64encode(buf.getvalue()).decode('utf-8')


            """
        )
        + f"def call_azure_gpt4v({signature}):\n"
        + unpack
        + encode
        + '    client = openai.AzureOpenAI(azure_endpoint="", api_version="2023-07-01-preview", api_key="")\n'
        + "    try:\n"
        + "        response = client.chat.completions.create(\n"
        + '        model="gpt-4o-2024-05-13",\n'
        + "        messages=[\n"
        + '            {"role": "system",\n'
        + f'             "content": {json.dumps(system)} "Second part."}},\n'
        + '            {"role": "user", "content": [\n'
        + '                {"type": "text", "text":\n'
        + user_literal
        + "\n                },\n"
        + image_parts
        + "            ]},\n"
        + "        ],\n"
        + f"        max_tokens=50,{create_extra}\n"
        + "        timeout=100\n"
        + "        )\n"
        + "    except Exception as e:\n"
        + "        print(e)\n"
        + "        return None\n"
        + "    return response.choices[0].message.content\n"
        + '\n\nif __name__ == "__main__":\n    print("not run by the tests")\n'
    )


def write_official_repo(root: Path, **changes) -> Path:
    for perspective, rel in OFFICIAL_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(official_source(perspective, **changes.get(perspective, {})))
    (root / "eval.py").write_text("# the official evaluation script would be here\n")
    return root


class _RecordingOpenAI(types.ModuleType):
    """Stands in for the `openai` package: records the create(...) keywords, answers a fixed text."""

    def __init__(self):
        super().__init__("openai")
        self.calls: list[dict] = []
        recorder = self

        class _Completions:
            def create(self, **kwargs):
                recorder.calls.append(kwargs)
                message = types.SimpleNamespace(content="{'score': 1.0}")
                return types.SimpleNamespace(choices=[types.SimpleNamespace(message=message)])

        class AzureOpenAI:
            def __init__(self, **kwargs):
                self.chat = types.SimpleNamespace(completions=_Completions())

        self.AzureOpenAI = AzureOpenAI


def official_requests(repo: Path, monkeypatch, source: Image.Image, edited: Image.Image, instruction: str):
    """perspective -> the request body the (fake) official scripts send for one edit (PIL images, as resized
    by eval.py), and the client timeout."""
    fake_openai = _RecordingOpenAI()
    monkeypatch.setitem(sys.modules, "openai", fake_openai)
    bodies = {}
    for perspective, rel in OFFICIAL_FILES.items():
        spec = importlib.util.spec_from_file_location(f"fake_official_{perspective}", repo / rel)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # the test's own stand-in file, not a user's code
        if perspective == "quality":
            module.call_azure_gpt4v(edited)
        else:
            module.call_azure_gpt4v([source, edited], instruction)
        kwargs = fake_openai.calls[-1]
        assert kwargs.pop("timeout") == 100  # client-side, not part of the request body
        bodies[perspective] = kwargs
    return bodies


def canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


def official_parser_counts(answer: str) -> bool:
    """Whether the official eval.py gets a score from an answer: it searches for `'score': D.D`."""
    return re.search(r"'score': [0-9]+\.[0-9]+", answer) is not None


# Score formats the official parser misses (and one yes it misses: "Yes" is not the substring "yes"), with
# the verdict our parser must find. `{key}` is the perspective's yes/no key.
MISSED_FORMATS = [
    ("{{'{key}': 'yes', 'score': 4}}", ("yes", 4.0)),  # an integer
    ('{{"{key}": "yes", "score": 4.5}}', ("yes", 4.5)),  # JSON quotes
    ("{{'{key}': 'no', 'score':2.5}}", ("no", 2.5)),  # no space after the colon
    ("{{'{key}': 'yes', 'score': 4.}}", ("yes", 4.0)),  # a trailing dot
    ("{{'{key}': 'yes', 'score': '4/5'}}", ("yes", 4.0)),  # a fraction
    ("{{'{key}': 'yes', 'score': 'four'}}", ("yes", 4.0)),  # a word
    ("{{'{key}': 'no', 'score': '3 out of 5'}}", ("no", 3.0)),
    ("{Key}: yes\nScore: 4/5", ("yes", 4.0)),  # plain text
    ("**{Key}**: No. **Score**: 1", ("no", 1.0)),
]


def render_answer(template: str, perspective: str) -> str:
    key = ANSWER_KEYS[perspective]
    return template.format(key=key, Key=key.capitalize())


@pytest.mark.parametrize("template, expected", MISSED_FORMATS)
def test_every_score_format_the_official_parser_misses_is_counted(template, expected):
    for perspective in ANSWER_KEYS:
        answer = render_answer(template, perspective)
        assert not official_parser_counts(answer)
        parsed = parse_eval_answer(answer)
        assert (parsed.answer, parsed.score) == expected
    # The official yes test is a case-sensitive substring: a capitalised Yes counts as no there.
    capital = "{'following': 'Yes', 'score': 4.5}"
    assert "yes" not in capital and parse_eval_answer(capital).answer == "yes"


# --- the API -------------------------------------------------------------------------------------------


def test_api_sends_what_the_official_scripts_send(tmp_path, judge_server, fake_key, monkeypatch):
    repo = write_official_repo(tmp_path / "official")
    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 256, (48, 96, 3), dtype=np.uint8))
    edited = Image.fromarray(rng.integers(0, 256, (48, 96, 3), dtype=np.uint8))
    source.save(tmp_path / "source.png")
    edited.save(tmp_path / "edited.png")
    # As eval.py: both images resized to height 512 at the source's aspect, default (bicubic) filter.
    size = (int(512 * 96 / 48), 512)
    expected = official_requests(repo, monkeypatch, source.resize(size), edited.resize(size), "paint it red")
    judge_server.script = lambda request: Reply(content="{'following': 'yes', 'score': 4}")
    config = JudgeConfig(protocol="official", official_repo=str(repo), base_url=judge_server.base_url)
    assert config.model == "gpt-4o-2024-05-13" and config.price_input_per_m == 5.0
    item = EditItem("e0", str(tmp_path / "source.png"), str(tmp_path / "edited.png"), "paint it red")
    report = evaluate_edits([item], config)
    assert report.failed == 0 and report.following_score == 4.0
    sent = sorted(canonical(r.body) for r in judge_server.requests)
    assert sent == sorted(canonical(body) for body in expected.values())
    for request in judge_server.requests:
        assert set(request.body) == {"model", "messages", "max_tokens"}  # no temperature, no format
        assert request.body["max_tokens"] == 50
        for url in request.image_urls:
            jpeg = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            assert (jpeg.format, jpeg.size) == ("JPEG", size)
    # --judge-model: another model, the same requests otherwise.
    judge_server.reset()
    other = config.replace(model="my-gpt4o-deployment", cache_path=None)
    evaluate_edits([item], other)
    assert {r.body["model"] for r in judge_server.requests} == {"my-gpt4o-deployment"}


def test_request_shape_follows_the_files(tmp_path, judge_server, fake_key, monkeypatch):
    """Image order and extra sampling fields are read from the clone, not assumed."""
    changes = {
        "following": {"edited_first": True},
        "quality": {"create_extra": " temperature=0.5,"},
    }
    repo = write_official_repo(tmp_path / "official", **changes)
    source = Image.new("RGB", (40, 20), (200, 0, 0))
    edited = Image.new("RGB", (40, 20), (0, 0, 200))
    size = (1024, 512)
    expected = official_requests(repo, monkeypatch, source.resize(size), edited.resize(size), "make it blue")
    config = JudgeConfig(protocol="official", official_repo=str(repo), base_url=judge_server.base_url)
    judge_server.script = lambda request: Reply(content="{'clear': 'yes', 'score': 4.0}")
    evaluate_edits([EditItem("e0", source, edited, "make it blue")], config)
    sent = {canonical(r.body) for r in judge_server.requests}
    assert sent == {canonical(body) for body in expected.values()}
    bodies = {r.body["messages"][0]["content"][:22]: r.body for r in judge_server.requests}
    assert bodies["Zebra-system text thre"]["temperature"] == 0.5
    assert "temperature" not in bodies["Zebra-system text one."]


def test_prompt_hashes_identify_the_prompts_without_their_text(tmp_path):
    repo = write_official_repo(tmp_path / "a")
    meta = protocol_metadata(JudgeConfig(protocol="official", official_repo=str(repo)))
    assert meta["files"] == OFFICIAL_FILES and meta["model_in_files"] == ["gpt-4o-2024-05-13"]
    assert meta["sampling"]["following"] == {"max_tokens": 50} and meta["timeout_s"] == 100.0
    assert meta["images"]["format"] == "JPEG" and meta["images"]["save_options"] == {}
    for perspective, rel in OFFICIAL_FILES.items():
        data = (repo / rel).read_bytes()
        assert meta["file_sha256"][perspective] == hashlib.sha256(data).hexdigest()
    assert "Zebra" not in json.dumps(meta)
    # Reformatting a file keeps the prompt hash; changing one prompt changes that prompt's hash only.
    other = write_official_repo(tmp_path / "b")
    path = other / OFFICIAL_FILES["preserving"]
    path.write_text(path.read_text().replace("Check edit B.", "Check edit B!") + "\n# a comment\n")
    quality = other / OFFICIAL_FILES["quality"]
    quality.write_text(quality.read_text() + "\n\n# reformatted\n")
    changed = protocol_metadata(JudgeConfig(protocol="official", official_repo=str(other)))
    assert changed["prompt_sha256"]["following"] == meta["prompt_sha256"]["following"]
    assert changed["prompt_sha256"]["quality"] == meta["prompt_sha256"]["quality"]
    assert changed["file_sha256"]["quality"] != meta["file_sha256"]["quality"]
    assert changed["prompt_sha256"]["preserving"] != meta["prompt_sha256"]["preserving"]
    assert changed["version"] != meta["version"]


@pytest.mark.parametrize(
    "perspective, edit, problem",
    [
        ("following", lambda s: s.replace("Edit text: {prompt}", "Edit text:"), "inserts the instruction"),
        (
            "preserving",
            lambda s: s.replace('"content": "Zebra', '"content": SYSTEM + "Zebra'),
            "string literal",
        ),
        ("quality", lambda s: s.replace("chat.completions.create", "chat.completions.make"), "one chat.comp"),
        ("quality", lambda s: s.replace("format='JPEG'", ""), "constant format="),
        ("following", lambda s: s.replace("{orig_b64}", "{other_b64}"), "which image other_b64 holds"),
        ("following", lambda s: s.replace("def call_azure", "def call_azure(:"), "not valid Python"),
    ],
)
def test_a_changed_file_is_a_one_line_error_naming_it(tmp_path, perspective, edit, problem):
    repo = write_official_repo(tmp_path / "official")
    path = repo / OFFICIAL_FILES[perspective]
    path.write_text(edit(path.read_text()))
    with pytest.raises(OfficialRepoError) as info:
        OfficialProtocol.load(repo)
    message = str(info.value)
    assert message.startswith(str(path)) and problem in message and "\n" not in message


# --- the evaluate CLI on a tiny Real-Edit ---------------------------------------------------------------


@pytest.fixture(scope="module")
def real_edit(tiny_pipeline_dir, real_edit_data_dir, tmp_path_factory):
    """The tiny random IP2P pipeline and the tiny real_edit (a 150x70 photo with 1 edit, a 70x70 one with 2)
    whose edits are generated once at resolution 64 (128x64 and 64x64): (model, data_dir, out)."""
    data_dir = real_edit_data_dir[0]
    out = tmp_path_factory.mktemp("official_real_edit") / "run"
    ev.evaluate(
        tiny_pipeline_dir,
        "real_edit",
        data_dir,
        out,
        judge="none",
        steps=1,
        resolution=64,
        batch_size=2,
        compiler_options=FAST_COMPILE,
        progress=False,
        log=None,
    )
    return tiny_pipeline_dir, data_dir, out


def cli(model, data_dir, out, *args: str) -> int:
    common = ["--model", str(model), "--benchmark", "real_edit", "--data-dir", str(data_dir)]
    common += ["--out", str(out), "--steps", "1", "--resolution", "64", "--batch-size", "2", "--no-progress"]
    return ev.main([*common, *args])


def test_cli_official_protocol_end_to_end(real_edit, tmp_path, judge_server, fake_key, monkeypatch, capsys):
    model, data_dir, generated = real_edit
    out = tmp_path / "run"
    shutil.copytree(generated, out)
    repo = write_official_repo(tmp_path / "Multi-Reward-Editing")
    # What the official scripts would send for each edit: eval.py resizes the fitted input and the edit to
    # height --resolution (64 here) at the original photo's aspect (150x70 -> 137x64, not the fitted 2:1).
    photos = {"wide": (150, 70), "square": (70, 70)}
    instructions = {"wide_Local": "make the cat red", "square_Style": "make it a painting"}
    instructions["square_Global"] = "make it night"
    expected: dict[str, tuple[str, str]] = {}
    sizes = set()
    for image_path in sorted((out / "images").iterdir()):
        name = image_path.stem.split("_", 1)[1]
        photo = name.split("_")[0]
        size = (int(64 * photos[photo][0] / photos[photo][1]), 64)
        sizes.add(size)
        source = Image.open(out / "inputs" / f"{photo}_png.png").convert("RGB").resize(size)
        edited = Image.open(image_path).convert("RGB").resize(size)
        bodies = official_requests(repo, monkeypatch, source, edited, instructions[name])
        for perspective, body in bodies.items():
            expected[canonical(body)] = (name, perspective)
    assert len(expected) == 9 and sizes == {(137, 64), (64, 64)}

    # Each request gets a different answer format the official parser misses.
    answers: dict[tuple[str, str], tuple[str, float]] = {}

    def script(request):
        name, perspective = expected[canonical(request.body)]
        template, verdict = MISSED_FORMATS[len(answers) % len(MISSED_FORMATS)]
        answers[(name, perspective)] = verdict
        return Reply(content=render_answer(template, perspective))

    judge_server.script = script
    url = judge_server.base_url
    official = ["--judge", "gpt", "--judge-base-url", url, "--judge-concurrency", "1"]
    assert (
        cli(model, data_dir, out, *official, "--judge-protocol", "official", "--official-repo", str(repo))
        == 0
    )
    assert len(judge_server.requests) == 9 and len(answers) == 9  # every request is an official one
    for request in judge_server.requests:
        assert set(request.body) == {"model", "messages", "max_tokens"}
        assert request.body["model"] == "gpt-4o-2024-05-13" and request.body["max_tokens"] == 50
    results = json.loads((out / "results.json").read_text())
    overall = results["overall"]
    assert overall["failed"] == 0 and overall["n"] == 3  # every answer counted
    for perspective in ANSWER_KEYS:
        verdicts = [v for (_, p), v in answers.items() if p == perspective]
        assert overall[f"{perspective}_score"] == pytest.approx(np.mean([s for _, s in verdicts]))
        assert overall[f"{perspective}_yes"] == pytest.approx(np.mean([a == "yes" for a, _ in verdicts]))
    config = results["config"]
    assert config["judge_protocol"] == "official" and config["judge_model"] == "gpt-4o-2024-05-13"
    details = config["judge_details"]
    assert details["source"] == str(repo.resolve()) and set(details["prompt_sha256"]) == set(ANSWER_KEYS)
    report = (out / "report.html").read_text()
    assert "official protocol" in report
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"Zebra" not in data and FAKE_KEY.encode() not in data  # no prompt text, no key
    judgments = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert {j["judge"] for j in judgments} == {f"gpt:gpt-4o-2024-05-13:{details['version']}"}

    # The default protocol: the project's own prompts, named as such; official judgments are not reused.
    judge_server.reset()
    judge_server.script = None
    assert cli(model, data_dir, out, *official) == 0
    assert len(judge_server.requests) == 9
    assert all("temperature" in r.body and "Zebra" not in r.text for r in judge_server.requests)
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["judge_protocol"] == "project" and results["config"]["judge_model"] == "gpt-4o"
    assert results["config"]["judge_details"]["version"] == "v1"
    assert "project protocol" in (out / "report.html").read_text()
    capsys.readouterr()


def test_cli_missing_or_changed_official_file_fails_before_generation(real_edit, tmp_path, fake_key, capsys):
    model, data_dir, _ = real_edit
    repo = write_official_repo(tmp_path / "Multi-Reward-Editing")
    (repo / OFFICIAL_FILES["preserving"]).unlink()
    out = tmp_path / "fresh"
    args = ["--judge", "gpt", "--judge-protocol", "official", "--official-repo", str(repo)]
    assert cli(model, data_dir, out, *args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    missing = repo / OFFICIAL_FILES["preserving"]
    assert len(lines) == 1 and lines[0].startswith(f"error: {missing}: missing")
    assert not (out / "images").exists()

    write_official_repo(repo)
    path = repo / OFFICIAL_FILES["following"]
    path.write_text(path.read_text().replace("messages=[", "messages=MESSAGES + ["))
    assert cli(model, data_dir, out, *args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith(f"error: {path}:")
        and "messages= is not a literal" in lines[0]
    )
    assert not (out / "images").exists()

    assert cli(model, data_dir, out, "--judge", "gpt", "--judge-protocol", "official") == 2
    assert capsys.readouterr().err.strip() == (
        "error: --judge-protocol official needs --official-repo PATH, "
        "a clone of bytedance/Multi-Reward-Editing"
    )
    assert cli(model, data_dir, out, "--judge", "none", "--judge-protocol", "official") == 2
    assert capsys.readouterr().err.strip() == "error: --judge-protocol official applies to --judge gpt only"
