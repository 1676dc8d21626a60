"""Measures llama.cpp's llama-server on the same prompts as the Switchyard bench example.

usage: llama_client.py PORT THREADS PROMPTS.json SWITCHYARD_RESULT.json
Prints one JSON object. Prefill and decode speeds come from llama-server's own `timings`
(/completion, prompt cache off); time to first token is measured over loopback HTTP.
"""
import http.client, json, statistics, sys, time

port, threads, prompts_path, ours_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
prompts = json.load(open(prompts_path))
ours = json.load(open(ours_path))
RUNS = 5
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(user):
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


def post(path, body):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=300)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit(f"{path}: HTTP {r.status}: {data[:300]!r}")
    return json.loads(data)


def completion(user, n_predict):
    return post("/completion", {"prompt": chatml(user), "n_predict": n_predict, "temperature": 0,
                                "cache_prompt": False, "stream": False})


completion("Hello", 8)  # warm-up
prefill, decode = [], []
for _ in range(RUNS):
    t = completion(prompts["prefill"], 1)["timings"]
    prefill.append(t["prompt_per_second"])
    prefill_n = t["prompt_n"]
for _ in range(RUNS):
    t = completion(prompts["decode"], 128)["timings"]
    decode.append(t["predicted_per_second"])
    decode_n = t["predicted_n"]

# Prompt token counts of the same chat through the OpenAI endpoint (its chat template).
counts = {}
for key, user in [("ttft", ours["ttft_text"]), ("decode", prompts["decode"])]:
    r = post("/v1/chat/completions", {"messages": [{"role": "user", "content": user}],
                                      "max_tokens": 1, "temperature": 0})
    counts[key] = r["usage"]["prompt_tokens"]

ttft = []
for _ in range(RUNS):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=300)
    body = {"messages": [{"role": "user", "content": ours["ttft_text"]}], "max_tokens": 16,
            "temperature": 0, "stream": True, "cache_prompt": False}
    start = time.perf_counter()
    c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    first = None
    for line in r:
        if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
            ev = json.loads(line[6:])
            ch = ev.get("choices") or [{}]
            if ch[0].get("delta", {}).get("content"):
                first = (time.perf_counter() - start) * 1e3
                break
    c.close()
    ttft.append(first if first is not None else float("nan"))

print(json.dumps({
    "engine": "llama.cpp llama-server", "threads": threads,
    "prefill_prompt_tokens": prefill_n, "prefill_tok_s": statistics.median(prefill),
    "decode_tokens": decode_n, "decode_tok_s": statistics.median(decode),
    "ttft_prompt_tokens": counts["ttft"], "ttft_ms": statistics.median(ttft),
    "chat_prompt_tokens": counts, "runs": RUNS,
}))
