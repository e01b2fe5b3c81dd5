"""``unmask serve`` through the official ``openai`` client against the real server on a free port."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from unmask.decoding.config import DecodeConfig
from unmask.serve.app import ServerSettings

from .conftest import API_KEY, start_server
from .test_engine import alone, prompts

MODEL = "unmask-testbed"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=300)


def post(server, body, key: str | None = API_KEY, path: str = "/v1/completions") -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers=headers, timeout=120)


def test_models_health_metrics(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    client.completions.create(model=MODEL, prompt=prompts(1)[0], max_tokens=16)
    text = httpx.get(server.url + "/metrics").text
    for name in ("unmask_requests_total", "unmask_queue_depth", "unmask_batch_occupancy", "unmask_tokens_per_second",
                 "unmask_forwards_per_token"):
        assert f"# TYPE {name} " in text
    assert 'unmask_requests_total{endpoint="/v1/completions",status="200"}' in text


def test_chat_completion_equals_generate(server, client, lm):
    prompt = prompts(2)[1]
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=40)
    config = DecodeConfig.create(policy="threshold", threshold=0.9, cache="dual", gen_length=64)
    assert reply.choices[0].message.content == alone(lm, prompt, config, 40)
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens and usage.model_extra["forwards"] >= 1


def test_completion_raw_prompt_with_decoding_fields(server, client, lm):
    prompt = prompts(1)[0]
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24,
                                      extra_body={"policy": "factor", "factor": 1.0, "cache": "prefix", "credit": True})
    config = DecodeConfig.create(policy="factor", factor=1.0, cache="prefix", credit=True, gen_length=32)
    out = lm.generate([prompt], config, chat=False)
    n = min(int(out.lengths[0]), 24)
    assert reply.choices[0].text == lm.tokenizer.decode(out.tokens[0, :n].tolist()).strip()


@pytest.mark.parametrize("chat", [True, False])
def test_streaming_grows_to_the_whole_answer(server, client, chat):
    prompt = prompts(2)[1]
    kwargs = {"model": MODEL, "max_tokens": 48, "extra_body": {"spec": "topk@dual"}}  # one token per step
    if chat:
        whole = client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **kwargs)
        chunks = list(client.chat.completions.create(messages=[{"role": "user", "content": prompt}], stream=True,
                                                     stream_options={"include_usage": True}, **kwargs))
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert chunks[0].choices[0].delta.role == "assistant"
        expected = whole.choices[0].message.content
    else:  # the completions endpoint takes the prompt as is: here the chat-formatted text
        prompt = server.lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
        whole = client.completions.create(prompt=prompt, **kwargs)
        chunks = list(client.completions.create(prompt=prompt, stream=True, stream_options={"include_usage": True},
                                                **kwargs))
        pieces = [c.choices[0].text for c in chunks if c.choices]
        expected = whole.choices[0].text
    assert "".join(pieces) == expected
    assert sum(bool(p) for p in pieces) >= 2  # the answer arrived in pieces, not at the end
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_32_concurrent_clients_mixed(server, lm):
    """32 clients at once, mixed lengths and policies: each answer equals its request decoded alone."""
    texts = prompts(8)
    specs = ["threshold:0.9@dual", "factor:1@prefix", "frechet:0.25+credit@dual", "threshold:0.7+credit@none"]
    jobs = [(texts[i % 8], specs[i % 4], 8 + 5 * (i % 7), i % 2 == 0) for i in range(32)]

    def call(job):
        prompt, spec, max_tokens, chat = job
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=300)
        if chat:
            r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}],
                                               max_tokens=max_tokens, extra_body={"spec": spec})
            return r.id, r.choices[0].message.content
        text = server.lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])  # sent as is
        r = client.completions.create(model=MODEL, prompt=text, max_tokens=max_tokens, extra_body={"spec": spec})
        return r.id, r.choices[0].text

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, jobs))
    assert len({ident for ident, _ in answers}) == 32  # none lost or duplicated
    from unmask.eval.spec import parse_spec

    for (prompt, spec, max_tokens, chat), (_, text) in zip(jobs, answers, strict=True):
        config = DecodeConfig.create(gen_length=-(-max_tokens // 32) * 32, **parse_spec(spec).generate_kwargs())
        if not chat:
            prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
        out = lm.generate([prompt], config, chat=chat)
        n = min(int(out.lengths[0]), max_tokens)
        assert text == lm.tokenizer.decode(out.tokens[0, :n].tolist()).strip(), (prompt, spec, max_tokens, chat)


BAD = [
    (b'{"model": "unmask-testbed", "prompt": ', 400, "not valid JSON"),
    ({"model": "nosuch", "prompt": "hi"}, 404, "not served here"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": 0}, 400, "max_tokens must be"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": 10**6}, 400, "exceeds the model's context"),
    ({"model": MODEL, "prompt": "hi " * 3000}, 400, "exceeds the model's context"),
    ({"model": MODEL, "prompt": "hi", "spec": "fastest"}, 400, "unknown policy 'fastest'"),
    ({"model": MODEL, "prompt": "hi", "threshold": 1.5}, 400, "threshold must be in (0, 1]"),
    ({"model": MODEL, "prompt": "hi", "margin": 0.2}, 400, "do not apply to policy 'threshold'"),
    ({"model": MODEL, "prompt": "hi", "treshold": 0.5}, 400, "unknown field(s) treshold"),
    ({"model": MODEL, "prompt": "hi", "cache": "triple"}, 400, "unknown cache mode 'triple'"),
    ({"model": MODEL, "prompt": "hi", "temperature": -1}, 400, "temperature"),
    ({"model": MODEL, "prompt": "hi", "n": 2}, 400, "n=2 is not supported"),
    ({"model": MODEL, "prompt": "   "}, 400, "prompt 0 is empty"),
    ({"model": MODEL}, 400, "prompt"),
    ({"model": MODEL, "prompt": "hi", "block_length": 0}, 400, "block_length must be"),
    # issue 26: values that used to answer 500 or be coerced silently
    ({"model": MODEL, "prompt": "hi", "credit": {"alpha": -1}}, 400, "credit alpha must be"),
    ({"model": MODEL, "prompt": "hi", "credit": {"beta": 5}}, 400, "credit beta must be in [0, 1]"),
    (b'{"model": "unmask-testbed", "prompt": "hi", "credit": {"alpha": NaN}}', 400, "credit alpha must be"),
    (b'{"model": "unmask-testbed", "prompt": "a \\ud800 b"}', 400, "prompt is not valid Unicode"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": "64"}, 400, "max_tokens"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": True}, 400, "max_tokens"),
    ({"model": MODEL, "prompt": "hi", "credit": "yes"}, 400, "credit"),
    ({"model": MODEL, "prompt": "hi", "stream": "yes"}, 400, "stream"),
    ({"model": MODEL, "prompt": "hi", "threshold": "0.9"}, 400, "threshold must be a number"),
    ({"model": MODEL, "prompt": "hi", "spec": "topk", "policy": "threshold"}, 400, "either spec or policy"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": 8, "max_completion_tokens": 16}, 400, "disagree"),
    ({"model": MODEL, "prompt": "hi", "temperature": 1e308}, 400, "temperature must be in [0, 2]"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD)
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, client, body, status, message):
    response = post(server, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error["message"] and error["type"]
    assert client.completions.create(model=MODEL, prompt=prompts(1)[0], max_tokens=8).choices[0].text is not None


def test_wrong_key_and_bad_chat(server):
    response = post(server, {"model": MODEL, "prompt": "hi"}, key="wrong")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    response = post(server, {"model": MODEL, "messages": []}, path="/v1/chat/completions")
    assert response.status_code == 400
    response = post(server, {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
                    path="/v1/chat/completions")
    assert response.status_code == 400 and "role" in response.json()["error"]["message"]


def test_full_queue_answers_429_with_retry_after(lm):
    uv, thread, url = start_server(lm, ServerSettings(), max_batch=1, max_queue=0)
    try:
        response = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 8})
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
        assert response.json()["error"]["type"] == "rate_limit_error"
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def test_a_warmed_server_builds_its_default_slots_before_serving(lm):
    """``unmask serve --warm``: the default spec's slots exist (on a GPU: every bucket captured) before the
    first request, which they serve; a negative prompt budget is refused."""
    settings = ServerSettings(spec="threshold:0.9@dual", default_max_tokens=32)
    uv, thread, url = start_server(lm, settings, max_batch=2, warm_prompt_tokens=64)
    try:
        engine = uv.config.app.state.engine
        assert len(engine.batches) == 1
        (batch,) = engine.batches.values()
        assert batch.engine.T >= 64 + 32
        response = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 32},
                              timeout=120)
        assert response.status_code == 200 and response.json()["choices"][0]["finish_reason"] in ("stop", "length")
        assert list(engine.batches.values()) == [batch]  # the request took the warmed slots
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
    with pytest.raises(ValueError, match="warm_prompt_tokens must be >= 0, got -1"):
        start_server(lm, settings, warm_prompt_tokens=-1)


def test_client_disconnect_frees_its_row(server):
    engine = server.app.state.engine
    body = {"model": MODEL, "prompt": prompts(1)[0], "max_tokens": 256, "stream": True, "spec": "topk"}
    with httpx.stream("POST", server.url + "/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the decode is running
    import time

    deadline = time.monotonic() + 30
    while engine.active_rows and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.active_rows == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--spec", "fastest"], "unknown policy 'fastest'"),
    (["--port", "0"], "--port must be in 1..65535"),
    (["--max-batch", "0"], "--max-batch must be >= 1"),
    (["--model", "/no/such/model"], "does not exist"),
    (["--host", "no.such.host.invalid"], "is not an address this machine can listen on"),
    (["--api-key-file", "/no/such/key"], "cannot be read as a key"),
    (["--api-key", "k", "--api-key-file", "/no/such/key"], "give the API key once"),
])
def test_serve_command_bad_options_are_one_line(args, message):
    from typer.testing import CliRunner

    from unmask.cli import app

    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_lone_surrogate_in_chat_content_is_a_400(server):
    body = b'{"model": "unmask-testbed", "messages": [{"role": "user", "content": "x \\ud800"}]}'
    response = post(server, body, path="/v1/chat/completions")
    assert response.status_code == 400 and "not valid Unicode" in response.json()["error"]["message"]


def test_a_huge_body_is_refused_unread_and_the_server_keeps_serving(server, client):
    body = b'{"model": "unmask-testbed", "prompt": "' + b"x" * (9 << 20) + b'"}'
    response = post(server, body)
    assert response.status_code == 413 and "over the limit" in response.json()["error"]["message"]
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    assert client.completions.create(model=MODEL, prompt=prompts(1)[0], max_tokens=8).choices[0].text is not None


def test_unknown_paths_make_no_new_metric_series(server):
    for i in range(20):
        httpx.get(server.url + f"/v1/nosuch{i}", headers={"Authorization": f"Bearer {API_KEY}"})
    text = httpx.get(server.url + "/metrics").text
    assert "nosuch" not in text and 'endpoint="other",status="404"' in text


def test_a_non_streaming_client_that_leaves_frees_its_row(server):
    """The row leaves within a second of the client going, not at the end of its decode, and is not counted as
    completed."""
    engine = server.app.state.engine
    finished = engine.stats.finished
    body = {"model": MODEL, "prompt": prompts(1)[0], "max_tokens": 384, "spec": "topk"}  # 384 forwards: seconds
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"},
                   timeout=0.5)
    import time

    deadline = time.monotonic() + 5
    while engine.active_rows and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.active_rows == 0 and engine.stats.finished == finished


def test_serve_on_a_port_in_use_is_one_line():
    import socket

    from typer.testing import CliRunner

    from unmask.cli import app

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output


def test_api_key_on_the_command_line_warns(tmp_path):
    """A key in argv is readable by every local process: serve says so (and reads a key file)."""
    from typer.testing import CliRunner

    from unmask.cli import app

    key_file = tmp_path / "key"
    key_file.write_text("\n")
    result = CliRunner().invoke(app, ["serve", "--api-key-file", str(key_file)])
    assert result.exit_code == 2 and "holds no key on its first line" in result.output
    import sys

    argv = sys.argv
    args = ["serve", "--api-key", "k", "--host", "no.such.host.invalid"]
    sys.argv = ["unmask", *args]
    try:
        result = CliRunner().invoke(app, args)
    finally:
        sys.argv = argv
    assert "--api-key on the command line is readable by every local process" in result.output
    assert result.exit_code == 2  # then the bad host stops it, in one line


def test_sampling_filters_are_decoding_fields(server, lm):
    """OpenAI's top_p (1: no filter) and a top_k field reach the decode; out-of-range values are a 400."""
    body = {"model": MODEL, "prompt": prompts(1)[0], "max_tokens": 16, "temperature": 0.7, "seed": 3}
    first = post(server, body | {"top_p": 0.9, "top_k": 5})
    assert first.status_code == 200, first.text
    again = post(server, body | {"top_p": 0.9, "top_k": 5})
    assert again.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]  # seeded
    assert post(server, body | {"top_p": 1}).status_code == 200
    for field, value, fragment in (("top_p", 1.5, "top_p must be"), ("top_k", 0, "top_k must be"),
                                   ("top_p", "x", "top_p must be")):
        r = post(server, body | {field: value})
        assert r.status_code == 400 and fragment in r.json()["error"]["message"], r.text
