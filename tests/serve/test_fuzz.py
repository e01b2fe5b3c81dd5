"""A fuzz of the server's JSON bodies through the real HTTP stack (issue 26): every request gets a 2xx or a 4xx
with OpenAI's error body, never a 5xx, and the server keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import API_KEY

MODEL = "unmask-testbed"
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.sampled_from(["\ud800", "threshold:0.9@dual", "topk", "dual", "NaN"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
FIELDS = ["max_tokens", "max_completion_tokens", "temperature", "seed", "stop", "stream", "stream_options", "n",
          "logprobs", "echo", "best_of", "spec", "policy", "credit", "cache", "block_length", "threshold", "factor",
          "margin", "steps", "top_p", "user", "wizard"]
bodies = st.fixed_dictionaries(
    {"model": st.sampled_from([MODEL, MODEL, "other", 3])},
    optional={**{f: values for f in FIELDS},
              "prompt": st.one_of(st.text(max_size=20), st.lists(st.text(max_size=8), max_size=2), values),
              "messages": st.one_of(values, st.lists(st.fixed_dictionaries(
                  {"role": st.sampled_from(["user", "system", "assistant", "wizard"]),
                   "content": st.one_of(st.text(max_size=20), values)}), max_size=2))})


def encode(body: dict) -> bytes:
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_no_body_gets_a_server_error(server, path, body):
    if isinstance(body.get("max_tokens"), int) and not isinstance(body["max_tokens"], bool):
        body["max_tokens"] = min(body["max_tokens"], 8)  # keep accepted decodes short
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    response = httpx.post(server.url + path, content=encode(body), headers=headers, timeout=120)
    assert response.status_code < 500, (body, response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"], response.text
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
